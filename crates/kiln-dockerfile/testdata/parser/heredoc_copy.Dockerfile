FROM alpine
COPY <<EOF /etc/motd
Welcome $USER
EOF
