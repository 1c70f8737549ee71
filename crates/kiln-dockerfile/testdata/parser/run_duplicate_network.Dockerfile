FROM alpine
RUN --network=none --network=host echo
