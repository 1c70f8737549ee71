FROM alpine
ADD --keep-git-dir=true https://github.com/x/y.git#v1 /src
