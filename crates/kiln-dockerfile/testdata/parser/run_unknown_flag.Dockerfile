FROM alpine
RUN --mnt=type=cache echo
