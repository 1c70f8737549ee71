FROM alpine
RUN echo "$HOME" && ls -l
