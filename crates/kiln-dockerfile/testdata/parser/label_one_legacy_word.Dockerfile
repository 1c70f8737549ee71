FROM alpine
LABEL x
