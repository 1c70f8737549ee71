FR\
OM alpine
