FROM alpine
ENV a=1 bad c=2
