FROM alpine
ENTRYPOINT ["/bin/tini", "--"]
