FROM alpine
    COPPY a b
