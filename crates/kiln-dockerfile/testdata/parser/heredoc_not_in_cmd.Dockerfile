FROM alpine
CMD cat <<EOF
