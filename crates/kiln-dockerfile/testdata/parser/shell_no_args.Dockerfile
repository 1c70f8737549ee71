FROM alpine
SHELL
