FROM alpine
HEALTHCHECK --intervall=1s CMD true
