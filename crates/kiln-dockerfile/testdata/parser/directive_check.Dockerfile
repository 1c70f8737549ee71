# check=skip=JSONArgsRecommended;error=true
FROM alpine
