FROM alpine
ARG MSG="hello world" OTHER='x y'
