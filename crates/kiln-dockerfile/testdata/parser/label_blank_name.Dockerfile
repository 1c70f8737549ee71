FROM alpine
LABEL =x
