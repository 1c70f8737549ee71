FROM alpine
COPY --from=build --chown=1:2 --chmod=0755 --link --parents --exclude=*.md --exclude=tmp/ a /b
