FROM alpine
ENV MY_VAR   hello   world
