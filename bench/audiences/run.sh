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
source bench/lib.sh
bench_setup audiences tessera tessera-bench
bench_machine_info "profiles=$PROFILES events=$EVENTS threads=$THREADS repeat=$REPEAT rate=$RATE seconds=$SECONDS_RUN"

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
    bench_start_server "$WORK/serve" "$RESULTS/server.log"
    log "realtime: tessera on $URL, $RATE events/s for $SECONDS_RUN s"
    WRITE_KEY="$(timeout 90 "$BIN/tessera-bench" setup --url "$URL" --name audiences)"
    "$BIN/tessera-bench" audience-realtime --url "$URL" --write-key "$WRITE_KEY" \
        --data-dir "$WORK/serve" --rate "$RATE" --seconds "$SECONDS_RUN" \
        > "$RESULTS/realtime.json" 2> >(tee "$RESULTS/realtime.txt" >&2)
    "$BIN/tessera-bench" get --url "$URL" /metrics > "$RESULTS/metrics.txt" 2>/dev/null || true
fi
log "results in $RESULTS"
