FROM alpine
RUN ["cat", "<<EOF"]
CMD ["x"]
