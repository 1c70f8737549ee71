FROM alpine
HEALTHCHECK --start-period=-1s CMD true
