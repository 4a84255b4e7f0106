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
# 4. probe: one webhook event every 50 ms for SECONDS_RUN s while two other clients each
#    send 100 events (that no destination takes) every 20 ms: acknowledged -> received
#    for the probes, on a host kept busy by other traffic.
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
source bench/lib.sh
bench_setup activation tessera tessera-bench
bench_machine_info "rate=$RATE seconds=$SECONDS_RUN fail_rate=$FAIL_RATE burst=$BURST"
bench_start_server "$WORK/serve" "$RESULTS/server.log"
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
log "probe: a webhook event every 50 ms beside 2 x 100 events every 20 ms of other traffic"
"$BIN/tessera-bench" deliveries --url "$URL" --write-key "$WRITE_KEY" --mode probe \
    --seconds "$SECONDS_RUN" --fail-rate 0 > "$RESULTS/probe.json"
cat "$RESULTS/probe.json"
"$BIN/tessera-bench" get --url "$URL" /metrics > "$RESULTS/metrics.txt" 2>/dev/null || true
log "results in $RESULTS"
