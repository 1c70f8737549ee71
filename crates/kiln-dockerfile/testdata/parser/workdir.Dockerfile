FROM alpine
WORKDIR /app/$NAME
