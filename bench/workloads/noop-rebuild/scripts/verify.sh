#!/bin/sh
# Checks that a directory holds files and prints how many.
set -e
n=$(find "$1" -type f | wc -l)
[ "$n" -gt 0 ] || { echo "no files under $1" >&2; exit 1; }
echo "$n files under $1"
