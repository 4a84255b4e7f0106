#!/usr/bin/env bash
# Runs every test of Tessera: formatting, lints, unit and property tests, then the
# end-to-end suite against the real release binary with the official Segment and
# RudderStack SDKs, in Debian's Chromium for the browser ones. Installs what it needs
# (Python venv, npm packages, chromium) on first run.
# Usage: tests/run.sh            (from the repository root; CI runs exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "layout: no crate's modules import each other in a circle"
python3 tests/lint/module_cycles.py

step "cargo test (unit, property and in-process HTTP tests, the store contract suite)"
cargo test --workspace --quiet

step "release binary"
cargo build --release --quiet -p tessera

step "test environment (Python venv with SDKs, Node SDK)"
tests/setup-env.sh

step "end-to-end tests against the real binary"
TESSERA_BIN="$PWD/target/release/tessera" tests/.venv/bin/python -m pytest -q tests/e2e "$@"
