#!/usr/bin/env bash
# The benchmark matrix: every promise measured on one build in one run, one table of
# measured figures against their targets with PASS/FAIL (loopback only).
#
#   bench/all.sh                     # about 10 minutes on 2 cores
#   TESSERA_BIN=/path/to/other/tessera bench/all.sh    # the same matrix on another build
#
# 1. ingest at saturation       bench/run.sh (32 connections, batches of 100, 20 s)
# 2. realtime audiences          PARTS=realtime bench/audiences/run.sh (10,000 events/s, 20 s)
# 3. activation                  bench/activation/run.sh (1,000 events/s healthy and failing
#                                30 %, a burst of 20,000, a probe beside busy traffic)
# 4. processor at PEOPLE people  tessera-bench processor (3.9 events per person)
# 5. Profile API                 tessera-bench profile-api at 2,000 requests/s on the
#                                processor's store
#
# Any change to the processor, the committer, the audience engine or the fan-out records
# this table in docs/BENCHMARKS.md. Exit status 1 when a target is missed.
#
# Settings (environment): PEOPLE=1000000 SKIP_BUILD=0 RESULTS=bench/results/all-<utc>
# PARTS="ingest realtime activation processor profile" TESSERA_BIN (the server under test;
# the load generators are always this tree's tessera-bench).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PEOPLE="${PEOPLE:-1000000}"
PARTS="${PARTS:-ingest realtime activation processor profile}"
source bench/lib.sh
bench_setup all tessera tessera-bench
export SKIP_BUILD=1
export TESSERA_BIN="${TESSERA_BIN:-$BIN/tessera}"
bench_machine_info "people=$PEOPLE parts=$PARTS server=$TESSERA_BIN ($(sha256sum "$TESSERA_BIN" | cut -c1-12))"

part() { [[ " $PARTS " == *" $1 "* ]]; }

if part ingest; then
    log "1/5 ingest at saturation"
    RESULTS="$RESULTS/ingest" bench/run.sh || log "ingest run failed"
fi
if part realtime; then
    log "2/5 realtime audiences at 10,000 events/s"
    RESULTS="$RESULTS/realtime" PARTS=realtime bench/audiences/run.sh || log "realtime run failed"
fi
if part activation; then
    log "3/5 activation"
    RESULTS="$RESULTS/activation" bench/activation/run.sh || log "activation run failed"
fi
if part processor || part profile; then
    log "4/5 processor at $PEOPLE people"
    "$BIN/tessera-bench" processor --dir "$WORK/store" --people "$PEOPLE" --json \
        > "$RESULTS/processor.json" 2> >(tee "$RESULTS/processor.txt" >&2) \
        || log "processor run failed"
fi
if part profile; then
    log "5/5 Profile API at 2,000 requests/s"
    bench_start_server "$WORK/store" "$RESULTS/profile-server.log"
    # Measure once the server is up and its audience index is built (a core for ~15 s
    # on this store), as a server that has been running would be.
    for _ in $(seq 1 900); do
        grep -q "audience index ready" "$RESULTS/profile-server.log" 2>/dev/null && break
        sleep 0.2
    done
    "$BIN/tessera-bench" profile-api --url "$URL" --token "$TESSERA_ADMIN_TOKEN" \
        --people "$PEOPLE" --rate 2000 --connections 16 --duration 20s --json \
        > "$RESULTS/profile-api.json" 2> >(tee "$RESULTS/profile-api.txt" >&2) \
        || log "profile API run failed"
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
fi

python3 - "$RESULTS" <<'PY' | tee "$RESULTS/summary.md"
import json, os, sys
root = sys.argv[1]
def load(*path):
    try:
        with open(os.path.join(root, *path)) as f:
            text = f.read().strip()
        # Some tools print one JSON object; take the last complete one.
        return json.loads(text[text.index("{"):]) if text else None
    except (OSError, ValueError):
        return None
def get(doc, *keys):
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc
rows = []
def row(benchmark, measure, value, unit, target, ok):
    shown = "—" if value is None else (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}")
    verdict = "n/a" if value is None else ("PASS" if ok(value) else "FAIL")
    rows.append((benchmark, measure, f"{shown} {unit}".strip(), target, verdict))
compare = load("ingest", "compare.json")
row("ingest, 32 connections", "events/s", get(compare, "tessera_events_per_sec"), "", "≥ 100,000", lambda v: v >= 100_000)
row("ingest, 32 connections", "p99 latency", get(compare, "tessera_p99_ms"), "ms", "< 50 ms", lambda v: v < 50)
ratio = get(compare, "ratio")
row("ingest, 32 connections", "share of the raw ceiling", None if ratio is None else ratio * 100, "%", "≥ 75 %", lambda v: v >= 75)
rt = load("realtime", "realtime.json")
row("realtime audiences, 10,000 events/s", "ack → membership p99", get(rt, "ack_to_change", "p99_ms"), "ms", "< 100 ms", lambda v: v < 100)
row("realtime audiences, 10,000 events/s", "profiles lost", get(rt, "lost"), "", "0", lambda v: v == 0)
healthy = load("activation", "steady-healthy.json")
row("activation, 1,000 events/s", "ack → webhook p99", get(healthy, "ack_to_delivered_ms", "p99"), "ms", "< 250 ms", lambda v: v < 250)
failing = load("activation", "steady.json")
row("activation, receiver failing 30 %", "deliveries lost", get(failing, "lost"), "", "0", lambda v: v == 0)
row("activation, receiver failing 30 %", "ack → webhook p99", get(failing, "ack_to_delivered_ms", "p99"), "ms", "(retry schedule)", lambda v: True)
burst = load("activation", "burst.json")
row("activation, burst of 20,000", "deliveries/s ÷ direct", get(burst, "ratio_to_direct"), "", "≥ 0.30", lambda v: v >= 0.30)
probe = load("activation", "probe.json")
row("activation, probe beside 10,000 events/s", "ack → webhook p99", get(probe, "ack_to_delivered_ms", "p99"), "ms", "< 250 ms", lambda v: v < 250)
proc = load("processor.json")
row("processor, 1M people", "events/s", get(proc, "events_per_second"), "", "≥ 100,000", lambda v: v >= 100_000)
api = load("profile-api.json")
row("Profile API, 2,000 requests/s", "p99 latency", get(api, "latency_ms", "p99"), "ms", "< 10 ms", lambda v: v < 10)
print("| benchmark | measure | measured | target | verdict |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
failed = sum(1 for r in rows if r[4] != "PASS")
print(f"\n{len(rows) - failed} of {len(rows)} met")
sys.exit(1 if failed else 0)
PY
