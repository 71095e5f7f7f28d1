#!/usr/bin/env bash
# Installs what prosum needs on a fresh machine from its own files: uv (from PyPI), the Python
# workspace (uv.lock), and the npm tools (package-lock.json: solc, anvil) when present.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "setup: installing uv from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
uv_cmd() { if command -v uv >/dev/null 2>&1; then uv "$@"; else python3 -m uv "$@"; fi; }

uv_cmd sync --frozen --all-packages --quiet

if [ -f package-lock.json ]; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "setup: installing npm tools (package-lock.json)" >&2
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi
