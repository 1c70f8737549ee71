FROM alpine AS st@ge
