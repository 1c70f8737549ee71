FROM alpine
ENV	KEY	value with spaces
