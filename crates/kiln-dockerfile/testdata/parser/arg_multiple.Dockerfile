ARG a=1 b c="x y"
FROM alpine
ARG d
