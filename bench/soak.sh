#!/usr/bin/env bash
# Soak: a long run at half the measured ingest capacity with the processor, audiences
# and activation working, checking that memory stays flat and nothing is lost.
#
#   bench/soak.sh                    # DURATION_S=3600 (one hour)
#   DURATION_S=600 bench/soak.sh     # ten minutes
#
# 1. Capacity: `tessera-bench load` (CONNECTIONS=32, 10 s, batches of 100) against a
#    throwaway server; RATE defaults to half of what it acknowledged per second. The
#    capacity run's data directory also gives the bytes stored per event: if RATE for
#    DURATION_S would fill more than half of the free disk, RATE is lowered to fit and
#    the report says `disk_limited`.
# 2. A fresh server (its `messageId` index capped at DEDUP_MAX entries, see below) with
#    an audience (`computed total_orders >= 2`, so computed traits
#    and memberships change) and a webhook destination to a local receiver (run by
#    `tessera-bench deliveries`, failing FAIL_RATE of requests with 503).
# 3. For DURATION_S: `tessera-bench load --rate` sends RATE - WEBHOOK_RATE events/s
#    (16 connections, batches of 100) and `tessera-bench deliveries` WEBHOOK_RATE
#    events/s for the webhook; every SAMPLE_S seconds the server's RSS, the processor's
#    lag and the webhook deliveries made so far are written to rss.csv.
# 4. At the end: the processor must catch up (within 300 s), every event the webhook
#    acknowledged must have been delivered (`lost` 0; duplicates are reported: delivery
#    is at least once), then the server is stopped and `tessera export events` must hold
#    at least every acknowledged event. Two structures grow with the events by design:
#    the audience index holds every profile's events (`tessera_audience_index_bytes`,
#    ~60 bytes per event here; docs/operations.md, sizing), and the `messageId`
#    de-duplication index every event of its window (7 days, at most `[ingest]
#    dedup_max_entries`, ~60 bytes each: 1.2 GB at the default 20 million), which the
#    soak caps at DEDUP_MAX (1,000,000, ~60 MB) so that it is full within minutes. So
#    memory is flat when RSS minus the audience index's bytes, at its largest in the
#    second half, is at most RSS_GROWTH (1.2) times its largest in the first half
#    (after the first sample) plus 32 MB. The raw RSS is reported too.
#
# Prints PASS or FAIL and a JSON report ($RESULTS/soak.json). Settings (environment):
# DURATION_S=3600 SAMPLE_S=60 RATE=<half capacity> WEBHOOK_RATE=200 FAIL_RATE=0.05
# CONNECTIONS=32 RSS_GROWTH=1.2 DEDUP_MAX=1000000 SKIP_BUILD=0
# RESULTS=bench/results/soak-<utc timestamp>
# Others benchmarking on the same machine: create /tmp/tessera-bench.lock around a run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION_S="${DURATION_S:-3600}"
SAMPLE_S="${SAMPLE_S:-60}"
WEBHOOK_RATE="${WEBHOOK_RATE:-200}"
FAIL_RATE="${FAIL_RATE:-0.05}"
CONNECTIONS="${CONNECTIONS:-32}"
RSS_GROWTH="${RSS_GROWTH:-1.2}"
DEDUP_MAX="${DEDUP_MAX:-1000000}"
source bench/lib.sh
bench_setup soak tessera tessera-bench
TESSERA="$BIN/tessera"
TB="$BIN/tessera-bench"

admin_post() {  # PATH JSON
    curl -sS -f -X POST "$URL$1" -H "Authorization: Bearer $TESSERA_ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -d "$2" > /dev/null
}
metric() {  # NAME: the value of an unlabelled metric, or empty
    # awk reads to the end: exiting early would fail curl (and the script) with SIGPIPE.
    curl -sS "$URL/metrics" 2>/dev/null | awk -v m="$1" '$1 == m { v = $2 } END { print v }' || true
}
stop_server() {
    if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

# 1. Capacity, on a throwaway server.
bench_start_server "$WORK/capacity" "$RESULTS/capacity-server.log"
WRITE_KEY="$(timeout 90 "$TB" setup --url "$URL" --name capacity)"
log "capacity: $CONNECTIONS connections for 10 s"
"$TB" load --url "$URL" --write-key "$WRITE_KEY" --connections "$CONNECTIONS" --duration 10s \
    --warmup 2s --batch 100 --json > "$RESULTS/capacity.json" 2> "$RESULTS/capacity.txt"
stop_server
CAPACITY="$(jq -r '.events_per_sec | floor' "$RESULTS/capacity.json")"
CAPACITY_EVENTS="$(jq -r '.accepted_events' "$RESULTS/capacity.json")"
CAPACITY_BYTES="$(du -sb "$WORK/capacity" | cut -f1)"
rm -rf "$WORK/capacity"
# Bytes per event on disk, with a margin for the profiles the processor had not built yet.
BYTES_PER_EVENT=$(( CAPACITY_BYTES * 3 / 2 / (CAPACITY_EVENTS + 1) + 1 ))
FREE_BYTES="$(df -B1 --output=avail "$WORK" | tail -1 | tr -d ' ')"
MAX_RATE=$(( FREE_BYTES / 2 / BYTES_PER_EVENT / DURATION_S ))
HALF=$(( CAPACITY / 2 ))
RATE="${RATE:-$HALF}"
DISK_LIMITED=false
if (( RATE > MAX_RATE )); then
    log "RATE $RATE events/s for $DURATION_S s would fill more than half of the free disk ($FREE_BYTES B at ~$BYTES_PER_EVENT B/event): lowered to $MAX_RATE"
    RATE="$MAX_RATE"
    DISK_LIMITED=true
fi
(( RATE > WEBHOOK_RATE )) || { log "RATE $RATE is not above WEBHOOK_RATE $WEBHOOK_RATE"; exit 1; }
LOAD_RATE=$(( RATE - WEBHOOK_RATE ))
bench_machine_info "duration_s=$DURATION_S rate=$RATE (capacity $CAPACITY, half $HALF, disk_limited=$DISK_LIMITED) webhook_rate=$WEBHOOK_RATE fail_rate=$FAIL_RATE dedup_max=$DEDUP_MAX"

# 2. The soak server.
printf '[ingest]\ndedup_max_entries = %d\n' "$DEDUP_MAX" > "$WORK/tessera.toml"
export TESSERA_CONFIG="$WORK/tessera.toml"
bench_start_server "$WORK/data" "$RESULTS/server.log"
unset TESSERA_CONFIG
WRITE_KEY="$(timeout 90 "$TB" setup --url "$URL" --name soak)"
admin_post /api/v1/audiences '{"key": "soak_repeat_buyers", "definition": "computed total_orders >= 2"}'

# 3. Load, webhook traffic and sampling.
log "soak: $LOAD_RATE events/s of mixed traffic + $WEBHOOK_RATE events/s for the webhook, $DURATION_S s"
"$TB" load --url "$URL" --write-key "$WRITE_KEY" --rate "$LOAD_RATE" --connections 16 \
    --duration "${DURATION_S}s" --warmup 0s --batch 100 --server-pid "$SERVER_PID" --json \
    > "$RESULTS/load.json" 2> "$RESULTS/load.txt" &
LOAD_PID=$!
"$TB" deliveries --url "$URL" --write-key "$WRITE_KEY" --mode steady --rate "$WEBHOOK_RATE" \
    --seconds "$DURATION_S" --fail-rate "$FAIL_RATE" --batch 10 \
    > "$RESULTS/deliveries.json" 2> "$RESULTS/deliveries.txt" &
DELIVERIES_PID=$!
echo "elapsed_s,rss_kb,audience_index_bytes,processor_lag_events,webhook_delivered_total" > "$RESULTS/rss.csv"
started=$(date +%s)
while kill -0 "$LOAD_PID" 2>/dev/null; do
    now=$(date +%s)
    rss=$(ps -o rss= -p "$SERVER_PID" | tr -d ' ' || true)
    lag=$(metric tessera_processor_lag_events)
    index=$(metric tessera_audience_index_bytes)
    delivered=$(curl -sS "$URL/metrics" 2>/dev/null | awk '$1 ~ /^tessera_deliveries_total\{.*outcome="delivered"/ { s += $2 } END { print s + 0 }' || true)
    echo "$(( now - started )),$rss,${index:-0},$lag,$delivered" | tee -a "$RESULTS/rss.csv" >&2
    for _ in $(seq "$SAMPLE_S"); do
        kill -0 "$LOAD_PID" 2>/dev/null || break
        sleep 1
    done
done
LOAD_OK=true
wait "$LOAD_PID" || LOAD_OK=false
DELIVERIES_OK=true
wait "$DELIVERIES_PID" || DELIVERIES_OK=false

# 4. Checks.
CAUGHT_UP=false
for _ in $(seq 300); do
    if [[ "$(metric tessera_processor_lag_events)" == 0 ]]; then CAUGHT_UP=true; break; fi
    sleep 1
done
rss_end=$(ps -o rss= -p "$SERVER_PID" | tr -d ' ' || true)
"$TB" get --url "$URL" /metrics > "$RESULTS/metrics.txt" 2>/dev/null || true
stop_server
LOGGED="$("$TESSERA" export events --data-dir "$WORK/data" | wc -l)"
DATA_BYTES="$(du -sb "$WORK/data" | cut -f1)"
python3 - "$RESULTS" "$LOGGED" "$CAUGHT_UP" "$LOAD_OK" "$DELIVERIES_OK" "$RSS_GROWTH" \
    "$rss_end" "$DATA_BYTES" "$CAPACITY" "$RATE" "$DISK_LIMITED" "$DURATION_S" <<'PY'
import csv, json, sys
(results, logged, caught_up, load_ok, deliveries_ok, growth, rss_end, data_bytes,
 capacity, rate, disk_limited, duration) = sys.argv[1:]
def load(name):
    try:
        with open(f"{results}/{name}") as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except Exception as e:  # a failed tool leaves no report
        return {"error": repr(e)}
ld, dl = load("load.json"), load("deliveries.json")
rows = list(csv.DictReader(open(f"{results}/rss.csv")))
rows = [r for r in rows if r["rss_kb"]]
rss = [int(r["rss_kb"]) for r in rows]
# KB not explained by the audience index, which holds events by design.
other = [int(r["rss_kb"]) - int(float(r["audience_index_bytes"] or 0)) // 1024 for r in rows]
half = len(other) // 2
early = other[1:half] or other[:1]
late = other[half:] or other[-1:]
early_max, late_max = (max(early) if early else 0), (max(late) if late else 0)
flat = late_max <= float(growth) * early_max + 32 * 1024
acked = int(ld.get("accepted_events", 0)) + int(dl.get("acknowledged", 0))
checks = {
    "load_and_deliveries_ran": load_ok == "true" and deliveries_ok == "true",
    "processor_caught_up": caught_up == "true",
    "nothing_lost_in_log": int(logged) >= acked and acked > 0,
    "every_webhook_event_delivered": dl.get("lost") == 0,
    "memory_flat": flat,
}
report = {
    "result": "PASS" if all(checks.values()) else "FAIL",
    "checks": checks,
    "duration_s": int(duration), "capacity_events_per_s": int(capacity), "rate_events_per_s": int(rate),
    "disk_limited": disk_limited == "true",
    "acknowledged_events": acked, "events_in_log": int(logged),
    "load": {k: ld.get(k) for k in ("accepted_events", "events_per_sec", "latency_ms", "errors", "retries_after_503")},
    "webhook": {k: dl.get(k) for k in ("acknowledged", "delivered", "lost", "duplicate_deliveries",
                                        "receiver_503s", "ack_to_delivered_ms")},
    "rss_mb": {"first": round(rss[0] / 1024, 1) if rss else None, "end": round(int(rss_end or 0) / 1024, 1),
               "samples": [round(x / 1024, 1) for x in rss]},
    "rss_minus_audience_index_mb": {"early_max": round(early_max / 1024, 1), "late_max": round(late_max / 1024, 1),
                                    "samples": [round(x / 1024, 1) for x in other]},
    "audience_index_mb_end": round(int(float(rows[-1]["audience_index_bytes"] or 0)) / 1e6, 1) if rows else None,
    "data_dir_bytes": int(data_bytes),
}
json.dump(report, open(f"{results}/soak.json", "w"), indent=2)
print(json.dumps(report, indent=2))
print(report["result"])
sys.exit(0 if report["result"] == "PASS" else 1)
PY
