FROM alpine
USER a b
