FROM alpine
RUN <<A cat /dev/stdin && cat <<-B
a-body
A
	b-body
	B
