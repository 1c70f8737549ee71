FROM alpine
ENV a="x y" b=c PATH=/x:$PATH
