# syntax=a

# syntax=b
FROM alpine
