FROM alpine
RUN echo ok
RUN cat <<EOF
line 1
line 2
