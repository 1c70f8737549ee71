FROM alpine
RUN -- --version
