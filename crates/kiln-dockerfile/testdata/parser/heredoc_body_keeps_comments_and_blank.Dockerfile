FROM alpine
RUN <<EOF
# kept

  indented \
EOF
