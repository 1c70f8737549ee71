# a comment
# escape=`
FROM alpine
RUN a \
 b
