FROM alpine
ADD --unpack a.tar /x/
