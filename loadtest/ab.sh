#!/usr/bin/env bash
# Before/after of a change: two trackgate binaries, same pinning and load as
# compare.sh, measured in turn (A/B, then B/A, …).
#
#   loadtest/ab.sh /path/to/trackgate-before target/release/trackgate [scenario]
#
# Env: ROUNDS (5), DURATION (5s), WARMUP (1s), CONNS (64), SERVER_CPU (0),
# LOAD_CPU (1), LOAD_DRIVER (epoll). Prints each round and the median ratio after/before.
# With CPU_RATE=R: instead of peak req/s, each run is open loop at R req/s and
# the figure is the server's CPU time (utime + stime, all threads) per request
# in µs; lower is better, and the ratio B/A below 1 means B is cheaper.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
A=$(realpath "$1"); B=$(realpath "$2"); SCEN=${3:-pixel}
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-5s}; WARMUP=${WARMUP:-1s}; CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}; LOAD_DRIVER=${LOAD_DRIVER:-epoll}
LT=$ROOT/target/release/loadtest
[ -x "$LT" ] || (cd "$ROOT" && cargo build --release -q -p loadtest)
SECRET=ab-secret-0123456789abcdef
WORK=$(mktemp -d /tmp/trackgate-ab.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
taskset -c "$LOAD_CPU" "$LT" origin --addr 127.0.0.1:18581 --driver "$LOAD_DRIVER" 2>/dev/null &
PIDS+=($!)
start() { # BIN PORT DIR
    mkdir -p "$3"
    (cd "$3" && exec taskset -c "$SERVER_CPU" env -i PATH="$PATH" SERVER_ADDR="127.0.0.1:$2" \
        FORWARD_DESTINATION=http://127.0.0.1:18581 HMAC_SECRET="$SECRET" CORES=1 LOG_PATH="$3/events.ndjson" \
        DATA_DIR="$3/data" LOG_LEVEL=warn JOURNAL_MAX_MB=16384 "$1" 2>"$3/stderr") &
    PIDS+=($!)
}
start "$A" 18582 "$WORK/a"; A_PID=$!
start "$B" 18583 "$WORK/b"; B_PID=$!
for p in 18581 18582 18583; do
    until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do sleep 0.05; done
done
one() {
    taskset -c "$LOAD_CPU" "$LT" --url "http://127.0.0.1:$1" --scenario "$SCEN" --hmac-secret "$SECRET" \
        --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNS" --driver "$LOAD_DRIVER" --json \
        | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])'
}
TICK=$(getconf CLK_TCK)
cpu() { # PORT PID: CPU µs per request at $CPU_RATE req/s
    local t0 t1 reqs
    t0=$(awk '{print $14 + $15}' "/proc/$2/stat")
    reqs=$(taskset -c "$LOAD_CPU" "$LT" --url "http://127.0.0.1:$1" --scenario "$SCEN" --hmac-secret "$SECRET" \
        --duration "$DURATION" --warmup 0 --rate "$CPU_RATE" --connections "$CONNS" --driver "$LOAD_DRIVER" --json \
        | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
    t1=$(awk '{print $14 + $15}' "/proc/$2/stat")
    python3 -c "print(f'{($t1-$t0)/$TICK*1e6/$reqs:.2f}')"
}
measure() { # PORT PID
    if [ -n "${CPU_RATE:-}" ]; then cpu "$1" "$2"; else one "$1"; fi
}
unit="req/s"; [ -n "${CPU_RATE:-}" ] && unit="CPU µs/request at $CPU_RATE req/s"
echo "A=$A"; echo "B=$B"; echo "scenario $SCEN, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| round | A $unit | B $unit | B/A |"; echo "|---|---|---|---|"
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then a=$(measure 18582 "$A_PID"); b=$(measure 18583 "$B_PID"); else b=$(measure 18583 "$B_PID"); a=$(measure 18582 "$A_PID"); fi
    ratio=$(python3 -c "print(f'{$b/$a:.3f}')"); ratios+=("$ratio")
    echo "| $r | $a | $b | $ratio |"
done
echo "median B/A: $(printf '%s\n' "${ratios[@]}" | python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.stdin):.3f}")'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
