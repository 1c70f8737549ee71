FROM alpine
\
RUN x
