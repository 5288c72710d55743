#!/usr/bin/env bash
# Instructions per request in user space (valgrind's callgrind), trackgate
# and nginx doing the same job as in compare.sh. Unlike req/s and CPU time,
# an instruction count does not depend on what else the machine runs.
#
#   loadtest/callgrind.sh [scenario] [trackgate binary]     # scenario: pixel (default) or proxy
#
# Each server runs under callgrind on CPU 0; the loadtest (on CPU 1) warms it
# up for 2 s, the counters are zeroed, then exactly RATE x DURATION requests
# are sent open loop (RATE=2000, DURATION=5 by default; the server runs ~50x
# slower under callgrind) and the counters dumped. Kernel work (the TCP
# stack, system calls) is not counted. Prints instructions per request for
# each trackgate thread and for nginx's single process; the profiles stay in
# $OUT (default a temp dir) for callgrind_annotate.
# NGINX=0 skips nginx (to compare two trackgate binaries).
# Needs valgrind and nginx (Debian: apt-get install valgrind nginx).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCEN=${1:-pixel}
BIN=$(realpath "${2:-$ROOT/target/release/trackgate}")
RATE=${RATE:-2000}; DURATION=${DURATION:-5}
N=$((RATE * DURATION))
OUT=${OUT:-$(mktemp -d /tmp/trackgate-callgrind.XXXXXX)}
mkdir -p "$OUT"
LT=$ROOT/target/release/loadtest
[ -x "$LT" ] || (cd "$ROOT" && cargo build --release -q -p loadtest)
command -v valgrind >/dev/null && command -v nginx >/dev/null || {
    echo "needs valgrind and nginx (apt-get install valgrind nginx)" >&2; exit 1; }
SECRET=callgrind-secret-0123456789abcdef
PORT=18795; ORIGIN=18796
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# Stops a server whose profile is dumped: the signal, then SIGKILL after 10 s
# (under valgrind a thread blocked in io_uring_enter can keep the others,
# the signal-handling one included, from running).
stop() { # SIGNAL PID
    kill "-$1" "$2" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$2" 2>/dev/null || true
    wait "$2" 2>/dev/null || true
}
wait_port() { until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do sleep 0.2; done; }
load() { # DURATION -> JSON line
    taskset -c 1 "$LT" --url "http://127.0.0.1:$PORT" --scenario "$SCEN" --hmac-secret "$SECRET" \
        --duration "$1" --warmup 0 --rate "$RATE" --connections 64 --driver epoll --json | tail -1
}
taskset -c 1 "$LT" origin --addr "127.0.0.1:$ORIGIN" --driver epoll 2>/dev/null &
PIDS+=($!)
wait_port "$ORIGIN"

measure() { # NAME PID: warm up, zero, send N requests, dump
    local name=$1 pid=$2
    load 2 >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local res; res=$(load "$DURATION")
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    echo "$name: $res" >&2
    case $res in *'"errors":0,'*) ;; *) echo "$name: the load had errors" >&2; exit 1 ;; esac
}

# trackgate: its request core, the journal thread and the log sink thread.
mkdir -p "$OUT/tg"
(cd "$OUT/tg" && exec taskset -c 0 env -i PATH="$PATH" SERVER_ADDR="127.0.0.1:$PORT" \
    FORWARD_DESTINATION="http://127.0.0.1:$ORIGIN" HMAC_SECRET="$SECRET" CORES=1 \
    LOG_PATH="$OUT/tg/events.ndjson" DATA_DIR="$OUT/tg/data" LOG_LEVEL=warn \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/tg/cg.out" \
    "$BIN" 2>"$OUT/tg/stderr") &
TG=$!; PIDS+=($TG)
wait_port "$PORT"
measure trackgate "$TG"
stop INT "$TG"

if [ "${NGINX:-1}" != 0 ]; then
# nginx, one process (master_process off), compare.sh's pixel and proxy
# configuration (nginx-conf.sh).
mkdir -p "$OUT/nginx/logs"
# The port must be free before nginx starts, or waiting for it would find
# the last server still there.
for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break; sleep 0.2; done
# shellcheck source=loadtest/nginx-conf.sh
. "$ROOT/loadtest/nginx-conf.sh"
nginx_conf "$OUT/nginx" "$PORT" "$ORIGIN" "master_process off;" >"$OUT/nginx.conf"
(exec taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/nginx/cg.out" \
    nginx -p "$OUT/nginx" -c "$OUT/nginx.conf" 2>"$OUT/nginx/stderr") &
NG=$!; PIDS+=($NG)
wait_port "$PORT"
measure nginx "$NG"
stop QUIT "$NG"
fi

# The dump taken after the measured requests is part 1 (cg.out.1, or
# cg.out.1-NN per thread).
per_req() { awk -v n="$N" '/^totals:/ { printf "%.0f", $2 / n }' "$1"; }
echo "instructions per $SCEN request (user space, callgrind, $N requests at $RATE req/s):"
total=0
for f in "$OUT"/tg/cg.out.1-*; do
    n=$(per_req "$f")
    [ "$n" -gt 0 ] || continue
    total=$((total + n))
    funcs=$(callgrind_annotate --threshold=100 --inclusive=yes "$f" 2>/dev/null)
    case $funcs in
        *JournalThread::run*) name="journal thread" ;;
        *SinkThread::run*) name="log sink thread" ;;
        *conn::serve*) name="request core" ;;
        *) name="other thread" ;;
    esac
    printf '  trackgate %-16s %8d\n' "$name" "$n"
done
printf '  trackgate %-16s %8d\n' "total" "$total"
[ "${NGINX:-1}" = 0 ] || printf '  nginx     %-16s %8d\n' "total" "$(per_req "$OUT/nginx/cg.out.1")"
echo "profiles: $OUT"
