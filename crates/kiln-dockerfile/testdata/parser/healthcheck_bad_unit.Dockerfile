FROM alpine
HEALTHCHECK --timeout=5y CMD true
