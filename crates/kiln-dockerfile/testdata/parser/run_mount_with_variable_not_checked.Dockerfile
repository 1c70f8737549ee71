FROM alpine
RUN --mount=type=$T,target=/x echo
