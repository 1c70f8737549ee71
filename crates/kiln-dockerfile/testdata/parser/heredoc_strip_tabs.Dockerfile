FROM alpine
RUN <<-EOT
	echo a
		echo b
	EOT
