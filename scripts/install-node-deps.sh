#!/usr/bin/env bash
# Install the npm dependencies of DIR (Node and npm from Debian when the machine has none).
set -euo pipefail

dir="${1:?usage: $0 DIR}"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update
    apt-get install -y nodejs npm
fi

cd "$dir"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi
touch node_modules/.installed
