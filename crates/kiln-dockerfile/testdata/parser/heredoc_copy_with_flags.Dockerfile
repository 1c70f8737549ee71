FROM alpine
COPY --chmod=0755 <<EOF /usr/local/bin/run
#!/bin/sh
echo run
EOF
