#!/bin/sh
echo "$GREETING, $1!"
cat /app/build-info
echo "running as $(id -un) in $(pwd)"
