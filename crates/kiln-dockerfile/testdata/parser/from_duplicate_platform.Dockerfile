FROM --platform=a --platform=b alpine
