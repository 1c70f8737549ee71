FROM alpine
RUN <<EOF
x
EOF
RUN echo after
