FROM alpine
COPY ["a"]
