FROM alpine
RUN echo "<<EOF" '<<EOF'
