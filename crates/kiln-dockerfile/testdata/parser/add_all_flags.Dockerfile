FROM alpine
ADD --chown=a --chmod=644 --link --keep-git-dir --checksum=sha256:0123 --unpack=false --exclude=x https://example.com/a.tar.gz /b
