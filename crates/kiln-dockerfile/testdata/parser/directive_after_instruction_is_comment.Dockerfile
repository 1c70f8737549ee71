FROM alpine
# escape=`
RUN a \
 b
