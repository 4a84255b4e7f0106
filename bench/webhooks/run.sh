#!/usr/bin/env bash
# Webhook sources and tracking plans: throughput against one `tessera serve`, all
# variants in the same run, alternated over ROUNDS (loopback only).
#
#   flock /tmp/tessera-bench.lock bench/webhooks/run.sh
#
# Phases of each round, CONNECTIONS keep-alive connections in a closed loop, SECONDS
# measured after 1 s of warmup:
# 1. webhook          signed Shopify orders/create payloads to POST /v1/webhooks/{id}
# 2. batch1           the same mapped Order Completed messages, one per /v1/batch request
# 3. batch100-noplan  batches of 100 of them to /v1/batch, source without a tracking plan
# 4. batch100-plan    the same on a source with a `flag` plan (JSON Schema) they all keep
#
# The per-key rate limit is off (`[limits] requests_per_second = 0` in a tessera.toml
# of the run), since one-event requests exceed its default of 5,000 requests/s.
#
# Settings (environment): CONNECTIONS=32 PHASE_SECONDS=10 ROUNDS=2
# RESULTS=bench/results/webhooks-<utc timestamp> SKIP_BUILD=0
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CONNECTIONS="${CONNECTIONS:-32}"
SECONDS_PER_PHASE="${PHASE_SECONDS:-10}"
ROUNDS="${ROUNDS:-2}"
source bench/lib.sh
bench_setup webhooks tessera tessera-bench
bench_machine_info "connections=$CONNECTIONS seconds=$SECONDS_PER_PHASE rounds=$ROUNDS"
printf '[limits]\nrequests_per_second = 0\n' > "$WORK/tessera.toml"
export TESSERA_CONFIG="$WORK/tessera.toml"
bench_start_server "$WORK/serve" "$RESULTS/server.log"
# Waits for /healthz (and creates a source the run does not use).
timeout 90 "$BIN/tessera-bench" setup --url "$URL" --name webhooks-ready > /dev/null
"$BIN/tessera-bench" webhooks --url "$URL" --connections "$CONNECTIONS" \
    --seconds "$SECONDS_PER_PHASE" --rounds "$ROUNDS" --json > "$RESULTS/webhooks.json"
cat "$RESULTS/webhooks.json"
"$BIN/tessera-bench" get --url "$URL" /metrics > "$RESULTS/metrics.txt" 2>/dev/null || true
log "results in $RESULTS"
