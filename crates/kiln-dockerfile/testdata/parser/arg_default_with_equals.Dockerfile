FROM alpine
ARG url=http://x/?a=b
