FROM --platform=$BUILDPLATFORM alpine AS x
