FROM alpine
COPY <<one <<'two' /dest/
1
one
2
two
