FROM alpine
COPY --link=false a b
