FROM alpine AS a-b_c.d9
