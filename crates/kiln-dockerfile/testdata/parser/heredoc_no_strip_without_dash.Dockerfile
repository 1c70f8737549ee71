FROM alpine
RUN <<EOT
	echo a
	EOT
EOT
