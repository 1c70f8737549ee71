# escape=`
FROM alpine
RUN echo a `
  b
RUN echo c\d
