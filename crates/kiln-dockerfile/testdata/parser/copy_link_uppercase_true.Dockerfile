FROM alpine
COPY --link=TRUE a b
