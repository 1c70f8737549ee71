FROM alpine
SHELL ["a", null]
