FROM alpine
LABEL desc="café ☕"
RUN echo ümläut
