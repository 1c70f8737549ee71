ARG V=1
RUN echo
FROM alpine
