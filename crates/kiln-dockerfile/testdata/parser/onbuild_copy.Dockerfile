FROM alpine
onbuild   copy . /app
