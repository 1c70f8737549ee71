FROM alpine
ADD <<EOF /a
x
EOF
