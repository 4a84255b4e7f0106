#!/usr/bin/env bash
# Activation benchmark: webhook deliveries through `tessera serve` to a local receiver
# run by tessera-bench (loopback only).
#
#   bench/activation/run.sh
#
# 1. steady, healthy receiver: RATE events/s for SECONDS_RUN s (batches of 10):
#    event acknowledged -> first 2xx at the receiver (p50/p90/p99/max).
# 2. steady, the receiver failing FAIL_RATE of requests with 503: the same, plus lost
#    and duplicate deliveries (retries add their backoff to the latency).
# 3. burst: BURST events as fast as possible, receiver always 2xx: deliveries/s, and in
#    the same run the same receiver driven directly (the ceiling) and the ratio.
#
# Settings (environment): RATE=1000 SECONDS_RUN=20 FAIL_RATE=0.3 BURST=20000
# RESULTS=bench/results/activation-<utc timestamp> SKIP_BUILD=0
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${RATE:-1000}"
SECONDS_RUN="${SECONDS_RUN:-20}"
FAIL_RATE="${FAIL_RATE:-0.3}"
BURST="${BURST:-20000}"
RESULTS="${RESULTS:-$ROOT/bench/results/activation-$(date -u +%Y%m%dT%H%M%SZ)}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
log() { printf '[activation] %s\n' "$*" >&2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p tessera -p tessera-bench
fi
mkdir -p "$RESULTS"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tessera-activation.XXXXXX")"
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
    echo "params:  rate=$RATE seconds=$SECONDS_RUN fail_rate=$FAIL_RATE burst=$BURST"
} | tee "$RESULTS/machine.txt" >&2

PORT="$("$BIN/tessera-bench" free-port)"
URL="http://127.0.0.1:$PORT"
export TESSERA_ADMIN_TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
"$BIN/tessera" serve --data-dir "$WORK/serve" --listen "127.0.0.1:$PORT" 2>"$RESULTS/server.log" &
SERVER_PID=$!
WRITE_KEY="$(timeout 90 "$BIN/tessera-bench" setup --url "$URL" --name activation)"

log "steady: $RATE events/s for $SECONDS_RUN s, healthy receiver"
"$BIN/tessera-bench" deliveries --url "$URL" --write-key "$WRITE_KEY" --mode steady \
    --rate "$RATE" --seconds "$SECONDS_RUN" --fail-rate 0 > "$RESULTS/steady-healthy.json"
cat "$RESULTS/steady-healthy.json"
log "steady: $RATE events/s for $SECONDS_RUN s, receiver failing $FAIL_RATE"
"$BIN/tessera-bench" deliveries --url "$URL" --write-key "$WRITE_KEY" --mode steady \
    --rate "$RATE" --seconds "$SECONDS_RUN" --fail-rate "$FAIL_RATE" > "$RESULTS/steady.json"
cat "$RESULTS/steady.json"
log "burst: $BURST events, receiver always 2xx"
"$BIN/tessera-bench" deliveries --url "$URL" --write-key "$WRITE_KEY" --mode burst \
    --events "$BURST" --fail-rate 0 > "$RESULTS/burst.json"
cat "$RESULTS/burst.json"
"$BIN/tessera-bench" get --url "$URL" /metrics > "$RESULTS/metrics.txt" 2>/dev/null || true
log "results in $RESULTS"
