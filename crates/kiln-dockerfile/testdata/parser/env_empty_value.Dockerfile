FROM alpine
ENV a= b=""
