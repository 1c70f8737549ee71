FROM alpine
COPY <<-"EOT" /x
	$A
		b
	EOT
