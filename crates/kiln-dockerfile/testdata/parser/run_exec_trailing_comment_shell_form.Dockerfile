FROM alpine
ENTRYPOINT ["a"] # comment
