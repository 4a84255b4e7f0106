# Shared by the benchmark scripts (bench/*/run.sh): source it from the repository root.
#
#   bench_setup NAME PACKAGE...   RESULTS (default bench/results/NAME-<utc>), BIN (release
#                                 binaries), WORK (a scratch dir removed on exit, after
#                                 stopping a server started here), log(); builds PACKAGEs
#                                 unless SKIP_BUILD=1
#   bench_machine_info PARAMS     date, commit, cores, CPU and PARAMS to $RESULTS/machine.txt
#   bench_start_server DIR LOG    `tessera serve` on a free loopback port with a throwaway
#                                 admin token; sets PORT, URL, SERVER_PID, TESSERA_ADMIN_TOKEN
#                                 (TESSERA_BIN picks another build of the server)

bench_setup() {
    local name="$1"
    shift
    BENCH_NAME="$name"
    RESULTS="${RESULTS:-$ROOT/bench/results/$name-$(date -u +%Y%m%dT%H%M%SZ)}"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
        local packages=()
        for package in "$@"; do packages+=(-p "$package"); done
        cargo build --release "${packages[@]}"
    fi
    mkdir -p "$RESULTS"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/tessera-$name.XXXXXX")"
    SERVER_PID=""
    trap bench_cleanup EXIT
}

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }

bench_cleanup() {
    if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}

bench_machine_info() {
    {
        echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo none)"
        echo "nproc:   $(nproc)"
        echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
        echo "params:  $1"
    } | tee "$RESULTS/machine.txt" >&2
}

bench_start_server() {
    PORT="$("$BIN/tessera-bench" free-port)"
    URL="http://127.0.0.1:$PORT"
    export TESSERA_ADMIN_TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    "${TESSERA_BIN:-$BIN/tessera}" serve --data-dir "$1" --listen "127.0.0.1:$PORT" 2>"$2" &
    SERVER_PID=$!
}
