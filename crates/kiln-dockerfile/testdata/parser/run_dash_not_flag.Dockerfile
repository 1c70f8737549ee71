FROM alpine
RUN -x
