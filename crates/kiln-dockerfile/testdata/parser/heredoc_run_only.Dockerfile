FROM alpine
RUN <<EOF
echo hello
echo $HOME
EOF
