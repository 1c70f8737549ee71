# check=a
# CHECK=b
FROM alpine
