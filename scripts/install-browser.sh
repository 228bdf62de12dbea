#!/usr/bin/env bash
# The playground test drives Debian's Chromium (Playwright's own browser download cannot work offline).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
chromium --version
