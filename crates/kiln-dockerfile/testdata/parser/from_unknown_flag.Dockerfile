FROM --plaform=linux/amd64 alpine
