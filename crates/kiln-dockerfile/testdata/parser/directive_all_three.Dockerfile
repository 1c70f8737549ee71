# syntax=docker/dockerfile:1.7
# escape=`
# check=error=true
FROM alpine
