FROM alpine
COPY ["a b", "/dest dir/"]
