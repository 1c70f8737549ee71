FROM alpine
RUN cat <<EOF > /x
line
EOF
