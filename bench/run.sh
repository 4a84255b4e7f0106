#!/usr/bin/env bash
# Tessera ingest benchmark (loopback only, bounded in time).
#
#   bench/run.sh            # 32 connections, 20 s measured after 3 s warmup, batches of 100
#
# 1. builds release binaries (tessera, tessera-bench) in the normal target dir,
# 2. starts `tessera serve` on 127.0.0.1:<free port> with a throwaway data dir,
# 3. creates a source through the admin API and runs `tessera-bench load` against /v1/batch,
# 4. stops the server (SIGTERM), then runs `tessera-bench raw` with the same parameters on the
#    same filesystem (parse + serialize + append + fsync with group commit: the raw ceiling),
# 5. prints tessera vs raw against the targets, plus disk usage.
#
# Settings (environment): CONNECTIONS=32 DURATION=20s WARMUP=3s BATCH=100 COMMIT_EVERY=auto
# LOAD_THREADS=1 (load generator runtime threads) SEQUENTIAL_IDS=0 (1: increasing messageIds
# instead of random-looking ones) BENCH_TMP=${TMPDIR:-/tmp} (data dirs live here)
# RESULTS=bench/results/<utc timestamp> KEEP_DATA=0 SKIP_BUILD=0 SETTLE=15 (seconds the disk is
# left to settle before measuring, after the files of an earlier run were deleted)
# TESSERA_BIN=<release dir>/tessera (another build of the server, for side-by-side runs).
# Results (JSON reports, server log, metrics, CPU snapshots) are written to $RESULTS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$ROOT/bench/run.sh"
    exit 0
fi

CONNECTIONS="${CONNECTIONS:-32}"
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-3s}"
BATCH="${BATCH:-100}"
COMMIT_EVERY="${COMMIT_EVERY:-auto}"
LOAD_THREADS="${LOAD_THREADS:-1}"
BENCH_TMP="${BENCH_TMP:-${TMPDIR:-/tmp}}"
RESULTS="${RESULTS:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
KEEP_DATA="${KEEP_DATA:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
SETTLE="${SETTLE:-15}"
ID_FLAG=()
[[ "${SEQUENTIAL_IDS:-0}" == 1 ]] && ID_FLAG=(--sequential-ids)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release"

# Seconds (rounded up) of a duration such as 20s, 500ms, 2m or 20.
secs() {
    local d="$1"
    case "$d" in
        *ms) echo $(( (${d%ms} + 999) / 1000 )) ;;
        *s) echo "${d%s}" | awk '{printf "%d\n", ($1 == int($1)) ? $1 : int($1) + 1}' ;;
        *m) echo $(( ${d%m} * 60 )) ;;
        *) echo "$d" | awk '{printf "%d\n", ($1 == int($1)) ? $1 : int($1) + 1}' ;;
    esac
}
RUN_SECS=$(( $(secs "$WARMUP") + $(secs "$DURATION") ))
PHASE_LIMIT=$(( RUN_SECS + 120 ))

log() { printf '[run.sh] %s\n' "$*" >&2; }
# run_logged OUT ERR CMD...: stdout to OUT, stderr to ERR, then ERR echoed; keeps the exit code.
run_logged() {
    local out="$1" err="$2" rc=0
    shift 2
    "$@" >"$out" 2>"$err" || rc=$?
    cat "$err" >&2
    return "$rc"
}

if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building release binaries"
    cargo build --release -p tessera -p tessera-bench
fi
for b in tessera tessera-bench; do
    [[ -x "$BIN/$b" ]] || { log "missing $BIN/$b"; exit 1; }
done
BENCH="$BIN/tessera-bench"

# Write out what a build (or anything before) left dirty in the page cache, so its writeback
# does not share the disk with the measured commits (the two runs that started right after a
# release build had p99 55-66 ms, the six after them 32-46 ms).
sync
# Deleting the gigabytes an earlier run left (this one's own files go at its end) makes the
# root filesystem (mounted with `discard`) hand their blocks back to the host, which keeps the
# virtual disk slow for several seconds after `rm` and `sync` have returned: measured
# 2026-12-03, a 3 GB file deleted 3 s before a run gave that run one WAL fsync stall of
# 370-460 ms (p99.9 370-450 ms); deleted 10 s before, none (p99.9 65 ms). So wait it out.
sleep "$SETTLE"
# The machine should be idle: sample /proc/stat over 3 s (a load average would still show the
# build that just finished).
read -r -a CPU_A < <(head -1 /proc/stat)
sleep 3
read -r -a CPU_B < <(head -1 /proc/stat)
BUSY_PCT=$(awk -v a="${CPU_A[*]}" -v b="${CPU_B[*]}" 'BEGIN {
    n = split(a, x); split(b, y); t = 0
    for (i = 2; i <= n && i <= 9; i++) t += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%d", (t > 0 ? 100 * (t - idle) / t : 0) }')
if (( BUSY_PCT > 10 )); then
    log "warning: the machine is ${BUSY_PCT}% busy before the run: something else is using the CPU"
fi

mkdir -p "$RESULTS"
WORK="$(mktemp -d "$BENCH_TMP/tessera-bench.XXXXXX")"
SERVER_PID=""
MONITOR_PID=""

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 600); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server did not stop within 60 s of SIGTERM; sending SIGKILL"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    if [[ -n "$MONITOR_PID" ]]; then
        kill "$MONITOR_PID" 2>/dev/null || true
        wait "$MONITOR_PID" 2>/dev/null || true
    fi
    stop_server
    if [[ "$KEEP_DATA" == 1 ]]; then
        log "data kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "nproc:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel:  $(uname -sr)"
    echo "disk:    $(df -h "$WORK" | awk 'NR == 2 {print $1, $2, "size,", $4, "free, mounted on", $6}')"
    echo "params:  connections=$CONNECTIONS duration=$DURATION warmup=$WARMUP batch=$BATCH commit_every=$COMMIT_EVERY load_threads=$LOAD_THREADS sequential_ids=${SEQUENTIAL_IDS:-0}"
} | tee "$RESULTS/machine.txt" >&2

# ---- tessera --------------------------------------------------------------------------------
PORT="$("$BENCH" free-port)"
URL="http://127.0.0.1:$PORT"
ADMIN_TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
log "starting tessera on $URL (data dir $WORK/data)"
TESSERA_ADMIN_TOKEN="$ADMIN_TOKEN" "${TESSERA_BIN:-$BIN/tessera}" serve --data-dir "$WORK/data" \
    --listen "127.0.0.1:$PORT" 2>"$RESULTS/server.log" &
SERVER_PID=$!

WRITE_KEY="$(TESSERA_ADMIN_TOKEN="$ADMIN_TOKEN" timeout 90 "$BENCH" setup --url "$URL" --name bench)"

# Mid-window CPU snapshots (per thread of the server, and the whole machine).
snapshot_later() {
    local name="$1" pid="${2:-}"
    (
        sleep $(( $(secs "$WARMUP") + $(secs "$DURATION") / 2 ))
        if [[ -n "$pid" ]]; then
            top -b -n1 -H -w 200 -p "$pid" > "$RESULTS/top-$name-threads.txt" 2>&1 || true
        fi
        top -b -n1 -w 200 | head -25 > "$RESULTS/top-$name-machine.txt" 2>&1 || true
    ) &
    MONITOR_PID=$!
}
snapshot_later tessera "$SERVER_PID"

log "load: $CONNECTIONS connections, batch $BATCH, warmup $WARMUP, duration $DURATION"
run_logged "$RESULTS/tessera.json" "$RESULTS/tessera.txt" \
    timeout "$PHASE_LIMIT" "$BENCH" load --url "$URL" --write-key "$WRITE_KEY" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --batch "$BATCH" \
    --threads "$LOAD_THREADS" --server-pid "$SERVER_PID" "${ID_FLAG[@]}" --json
wait "$MONITOR_PID" 2>/dev/null || true
MONITOR_PID=""

"$BENCH" get --url "$URL" /metrics > "$RESULTS/metrics.txt" 2>/dev/null || log "could not read /metrics"
STOP_START=$(date +%s.%N)
stop_server
STOP_END=$(date +%s.%N)
log "server stopped in $(awk -v a="$STOP_START" -v b="$STOP_END" 'BEGIN {printf "%.1f", b - a}') s"

DATA_BYTES=$(du -sb "$WORK/data" | cut -f1)
STORED_EVENTS=$(awk '/^tessera_events_accepted_total/ {s += $NF} END {printf "%d", s}' "$RESULTS/metrics.txt" 2>/dev/null || echo 0)

# ---- raw ceiling ----------------------------------------------------------------------------
log "raw: same parameters, files in $WORK/raw"
snapshot_later raw
run_logged "$RESULTS/raw.json" "$RESULTS/raw.txt" \
    timeout "$PHASE_LIMIT" "$BENCH" raw --dir "$WORK/raw" --keep \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --batch "$BATCH" \
    --commit-every "$COMMIT_EVERY" "${ID_FLAG[@]}" --json
wait "$MONITOR_PID" 2>/dev/null || true
MONITOR_PID=""
RAW_BYTES=$(du -sb "$WORK/raw" | cut -f1)
RAW_EVENTS=$(wc -l < "$WORK/raw/raw-ceiling.jsonl")
rm -rf "$WORK/raw"

# ---- summary --------------------------------------------------------------------------------
run_logged "$RESULTS/compare.json" "$RESULTS/compare.txt" \
    "$BENCH" compare --tessera "$RESULTS/tessera.json" --raw "$RESULTS/raw.json" --json
{
    echo "== disk usage =="
    awk -v b="$DATA_BYTES" -v n="$STORED_EVENTS" 'BEGIN {
        printf "  tessera data dir  %.1f MB for %d accepted events (metrics)", b / 1e6, n;
        if (n > 0) printf ", %.0f B/event", b / n; printf "\n" }'
    awk -v b="$RAW_BYTES" -v n="$RAW_EVENTS" 'BEGIN {
        printf "  raw file          %.1f MB for %d events", b / 1e6, n;
        if (n > 0) printf ", %.0f B/event", b / n; printf "\n" }'
    echo "  results in $RESULTS"
} | tee "$RESULTS/disk.txt" >&2
