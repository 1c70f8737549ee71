FROM alpine
RUN <<END-1
body
END-1
