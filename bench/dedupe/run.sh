#!/usr/bin/env bash
# De-duplication accuracy beside Python recordlinkage (see compare.py): sets up
# bench/dedupe/.venv on first run, then compares on generated sets (and FEBRL 1-3
# when TESSERA_FEBRL_DIR names their folder).
# Usage: bench/dedupe/run.sh [--records N] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=bench/dedupe/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r bench/dedupe/requirements.txt
fi
bin="${TESSERA_BIN:-${CARGO_TARGET_DIR:-target}/release/tessera}"
febrl=()
if [ -n "${TESSERA_FEBRL_DIR:-}" ]; then febrl=(--febrl "$TESSERA_FEBRL_DIR"); fi
exec nice -n 19 "$venv/bin/python" bench/dedupe/compare.py --tessera "$bin" \
  --work "${TMPDIR:-/tmp}/tessera-dedupe-bench" "${febrl[@]}" "$@"
