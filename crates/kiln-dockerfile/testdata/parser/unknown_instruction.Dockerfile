FROM alpine
RUUN echo hi
