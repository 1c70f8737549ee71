FROM alpine
ADD --parents a b
