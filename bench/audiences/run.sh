#!/usr/bin/env bash
# Audience benchmarks (loopback only).
#
#   bench/audiences/run.sh            # both parts at full size
#
# 1. Comparison with DuckDB: `tessera-bench audiences` generates PROFILES profiles and
#    EVENTS events, builds Tessera's audience index, times the ten definitions, then runs
#    bench/audiences/duckdb_side.py (the same definitions as SQL, same threads) and
#    checks that every member count agrees. Report: $RESULTS/compare.json.
# 2. Realtime latency: starts `tessera serve` on a throwaway data dir, creates the
#    cart-abandonment audience and sends Product Added events from new users at RATE
#    events/s for SECONDS s; reports event acknowledged -> membership change.
#    Report: $RESULTS/realtime.json.
#
# Settings (environment): PROFILES=1000000 EVENTS=20000000 THREADS=2 REPEAT=5 RATE=10000
# SECONDS_RUN=20 PARTS="compare realtime" RESULTS=bench/results/audiences-<utc timestamp>
# SKIP_BUILD=0. The DuckDB side needs bench/.venv (created here from requirements.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PROFILES="${PROFILES:-1000000}"
EVENTS="${EVENTS:-20000000}"
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-5}"
RATE="${RATE:-10000}"
SECONDS_RUN="${SECONDS_RUN:-20}"
PARTS="${PARTS:-compare realtime}"
RESULTS="${RESULTS:-$ROOT/bench/results/audiences-$(date -u +%Y%m%dT%H%M%SZ)}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
log() { printf '[audiences] %s\n' "$*" >&2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p tessera -p tessera-bench
fi
mkdir -p "$RESULTS"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tessera-audiences.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

{
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "nproc:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "params:  profiles=$PROFILES events=$EVENTS threads=$THREADS repeat=$REPEAT rate=$RATE seconds=$SECONDS_RUN"
} | tee "$RESULTS/machine.txt" >&2

if [[ " $PARTS " == *" compare "* ]]; then
    if [[ ! -x bench/.venv/bin/python ]]; then
        python3 -m venv bench/.venv
    fi
    bench/.venv/bin/pip install --quiet --disable-pip-version-check -r bench/audiences/requirements.txt
    log "comparison with DuckDB: $PROFILES profiles, $EVENTS events"
    "$BIN/tessera-bench" audiences --profiles "$PROFILES" --events "$EVENTS" --threads "$THREADS" \
        --repeat "$REPEAT" --out "$WORK/data" --python bench/.venv/bin/python \
        > "$RESULTS/compare.json" 2> >(tee "$RESULTS/compare.txt" >&2)
    rm -rf "$WORK/data"
fi

if [[ " $PARTS " == *" realtime "* ]]; then
    PORT="$("$BIN/tessera-bench" free-port)"
    URL="http://127.0.0.1:$PORT"
    export TESSERA_ADMIN_TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    log "realtime: tessera on $URL, $RATE events/s for $SECONDS_RUN s"
    "$BIN/tessera" serve --data-dir "$WORK/serve" --listen "127.0.0.1:$PORT" 2>"$RESULTS/server.log" &
    SERVER_PID=$!
    WRITE_KEY="$(timeout 90 "$BIN/tessera-bench" setup --url "$URL" --name audiences)"
    "$BIN/tessera-bench" audience-realtime --url "$URL" --write-key "$WRITE_KEY" \
        --data-dir "$WORK/serve" --rate "$RATE" --seconds "$SECONDS_RUN" \
        > "$RESULTS/realtime.json" 2> >(tee "$RESULTS/realtime.txt" >&2)
    "$BIN/tessera-bench" get --url "$URL" /metrics > "$RESULTS/metrics.txt" 2>/dev/null || true
fi
log "results in $RESULTS"
