FROM alpine
RUN --network=host echo
