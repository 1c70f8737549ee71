FROM alpine
HEALTHCHECK --retries=1 --retries=2 CMD true
