FROM alpine
ENV --x=1 a=b
