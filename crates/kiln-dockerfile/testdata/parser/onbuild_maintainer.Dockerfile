FROM alpine
ONBUILD maintainer x
