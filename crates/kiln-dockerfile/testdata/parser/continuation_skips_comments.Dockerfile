FROM alpine
RUN echo a \
# comment inside
  # indented comment
  b
