FROM alpine
VOLUME --x /a
