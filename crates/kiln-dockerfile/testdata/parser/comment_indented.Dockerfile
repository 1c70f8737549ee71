FROM alpine
   # indented comment
RUN true
