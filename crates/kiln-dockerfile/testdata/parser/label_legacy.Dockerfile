FROM alpine
LABEL maintainer  John Doe <j@x>
