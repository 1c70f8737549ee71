FROM alpine
ENV a="say \"hi\"" b='it''s'
