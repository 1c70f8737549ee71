FROM alpine
RUN <<E"O"F
x
EOF
