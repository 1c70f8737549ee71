FROM alpine
LABEL a=b "com.x.y"="v 1" c='d e' f=g\ h
