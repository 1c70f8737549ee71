FROM alpine IS a
