#!/usr/bin/env bash
# Installs what the end-to-end suite needs (idempotent, works on a clean clone):
#   tests/.venv              Python venv with tests/requirements.txt (Playwright among them)
#   tests/node/node_modules  the Segment Node SDK and RudderStack's browser SDK, from
#                            tests/node/package-lock.json
#   /usr/bin/chromium        Debian's Chromium, which Playwright drives (apt-get, when
#                            absent; needs root, as CI has). Playwright never downloads
#                            a browser build of its own.
# Then run:  tests/.venv/bin/pytest -q tests/e2e
set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$TESTS_DIR/.venv"
PYTHON="${PYTHON:-python3}"

CHROMIUM="${TESSERA_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup-env.sh: installing Debian's chromium (for tests/e2e/test_browser.py)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup-env.sh: $CHROMIUM is missing: install Debian's chromium package (apt-get install chromium) as root" >&2
    exit 1
  fi
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when requirements.txt changed since the last successful install.
req_stamp="$VENV/.requirements.sha256"
req_hash="$(sha256sum "$TESTS_DIR/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$req_stamp" ] || [ "$(cat "$req_stamp")" != "$req_hash" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$TESTS_DIR/requirements.txt"
  echo "$req_hash" > "$req_stamp"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup-env.sh: node and npm are required for tests/node" >&2
  exit 1
fi

node_stamp="$TESTS_DIR/node/node_modules/.lock.sha256"
lock_hash="$(sha256sum "$TESTS_DIR/node/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$node_stamp" ] || [ "$(cat "$node_stamp")" != "$lock_hash" ]; then
  (
    cd "$TESTS_DIR/node"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
  )
  echo "$lock_hash" > "$node_stamp"
fi
