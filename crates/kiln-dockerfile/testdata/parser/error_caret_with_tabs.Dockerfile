FROM alpine
	RUN --bad echo
