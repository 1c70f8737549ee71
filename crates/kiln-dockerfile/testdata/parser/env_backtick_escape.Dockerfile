# escape=`
FROM alpine
ENV a=x` y b="q`"r"
