FROM --platform alpine
