FROM alpine
RUN ["echo", "a b", "\u00e9"]
