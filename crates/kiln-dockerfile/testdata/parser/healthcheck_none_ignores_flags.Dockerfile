FROM alpine
HEALTHCHECK --interval=1s NONE
