FROM alpine
CMD []
