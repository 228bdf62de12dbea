#!/usr/bin/env bash
# The tests start their own redis-server; install Debian's package when the machine has none.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
redis-server --version
