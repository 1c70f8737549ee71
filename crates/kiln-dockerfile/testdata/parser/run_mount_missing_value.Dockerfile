FROM alpine
RUN --mount echo
