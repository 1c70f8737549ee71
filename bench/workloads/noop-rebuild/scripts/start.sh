#!/bin/sh
# Entry point of the noop-rebuild image.
echo "noop-rebuild $APP_VERSION: $*"
