#!/usr/bin/env bash
# Erasure benchmark (offline CLI, embedded store).
#
#   bench/privacy/run.sh
#
# Builds a data directory with USERS people x EVENTS_PER_USER events (an anonymous page,
# an identify with email/phone/name, then tracks) through `tessera import`, applies them
# (`tessera replay`), then times, side by side on the same files:
#   - the baseline: one full read of the log (`tessera export events > /dev/null`);
#   - `tessera privacy erase --identifier email:...` for ERASURES random people
#     (each: suppression, scan of the log for the identifiers, deletion, WAL truncation).
# Prints a JSON report (also written to $RESULTS/erasure.json).
#
# Settings (environment): USERS=100000 EVENTS_PER_USER=10 ERASURES=3 SKIP_BUILD=0
# RESULTS=bench/results/privacy-<utc timestamp>
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
USERS="${USERS:-100000}"
EVENTS_PER_USER="${EVENTS_PER_USER:-10}"
ERASURES="${ERASURES:-3}"
source bench/lib.sh
bench_setup privacy tessera
bench_machine_info "users=$USERS events_per_user=$EVENTS_PER_USER erasures=$ERASURES"
TESSERA="$BIN/tessera"
DATA="$WORK/data"

log "generating $USERS people x $EVENTS_PER_USER events"
python3 - "$USERS" "$EVENTS_PER_USER" > "$WORK/events.jsonl" <<'PY'
import json, sys, uuid
users, per = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
for u in range(users):
    anon = f"anon-{u:07d}"
    user = f"user-{u:07d}"
    ts = f"2026-{1 + u % 12:02d}-{1 + u % 28:02d}T10:00:00Z"
    msgs = [
        {"type": "page", "anonymousId": anon, "name": "Home", "properties": {"path": "/", "title": "Home"}},
        {"type": "identify", "anonymousId": anon, "userId": user,
         "traits": {"email": f"person{u}@example.com", "phone": f"+1415{2000000 + u:07d}",
                    "name": f"Person {u}", "plan": ["free", "pro"][u % 2]}},
    ]
    for i in range(per - 2):
        msgs.append({"type": "track", "userId": user, "event": ["Product Viewed", "Product Added", "Order Completed"][i % 3],
                     "properties": {"sku": f"SKU-{(u * 7 + i) % 5000}", "price": 10 + i, "category": ["shoes", "hats"][i % 2]}})
    for m in msgs:
        m["messageId"] = str(uuid.uuid4())
        m["timestamp"] = ts
        out.write(json.dumps(m) + "\n")
PY
"$TESSERA" sources create bench --data-dir "$DATA" > /dev/null
t0=$(date +%s.%N)
"$TESSERA" import "$WORK/events.jsonl" --source bench --data-dir "$DATA"
t1=$(date +%s.%N)
"$TESSERA" replay --data-dir "$DATA"
t2=$(date +%s.%N)
events=$(wc -l < "$WORK/events.jsonl")
log_bytes=$(stat -c %s "$DATA/events.db")

scan_s=()
erase_s=()
for n in $(seq 1 "$ERASURES"); do
    u=$(( (n * 7919) % USERS ))
    s0=$(date +%s.%N)
    "$TESSERA" export events --data-dir "$DATA" > /dev/null
    s1=$(date +%s.%N)
    "$TESSERA" privacy erase --identifier "email:person${u}@example.com" --data-dir "$DATA" > "$WORK/erase-$n.json"
    s2=$(date +%s.%N)
    scan_s+=("$(echo "$s1 - $s0" | bc)")
    erase_s+=("$(echo "$s2 - $s1" | bc)")
    log "person $u: full log read $(echo "$s1 - $s0" | bc) s, erasure $(echo "$s2 - $s1" | bc) s: $(cat "$WORK/erase-$n.json")"
    for needle in "person${u}@example.com" "$(printf 'user-%07d' "$u")" "$(printf 'anon-%07d' "$u")" "Person $u\""; do
        if grep -rqaF "$needle" "$DATA"; then
            log "FAIL: $needle still in $DATA"; exit 1
        fi
    done
done
python3 - "$events" "$log_bytes" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" \
    "${scan_s[*]}" "${erase_s[*]}" "$(nproc)" > "$RESULTS/erasure.json" <<'PY'
import json, statistics, sys
events, log_bytes, imp, replay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
scan = [float(x) for x in sys.argv[5].split()]
erase = [float(x) for x in sys.argv[6].split()]
print(json.dumps({
    "events": events, "event_log_bytes": log_bytes, "cores": int(sys.argv[7]),
    "import_seconds": round(imp, 2), "replay_seconds": round(replay, 2),
    "full_log_read_seconds": [round(x, 2) for x in scan],
    "erasure_seconds": [round(x, 2) for x in erase],
    "erasure_median_seconds": round(statistics.median(erase), 2),
    "erasure_over_full_read": round(statistics.median(erase) / statistics.median(scan), 2),
}, indent=2))
PY
cat "$RESULTS/erasure.json"
