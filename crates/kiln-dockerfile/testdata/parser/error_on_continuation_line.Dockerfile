FROM alpine
COPY \
  --chown=1 \
  --bogus=2 a b
