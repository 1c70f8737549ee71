# escape=
# syntax=x
FROM alpine
