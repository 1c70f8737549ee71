FROM alpine
VOLUME ["/a", " "]
