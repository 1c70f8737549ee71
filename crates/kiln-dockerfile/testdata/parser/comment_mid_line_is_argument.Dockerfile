FROM alpine
RUN echo hi # not a comment
