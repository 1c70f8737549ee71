FROM alpine
USER app:app
