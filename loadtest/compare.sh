#!/usr/bin/env bash
# trackgate against nginx doing the same job, side by side on one core each.
#
#   loadtest/compare.sh                 # defaults below; every knob is an env var
#   ROUNDS=5 DURATION=10s loadtest/compare.sh
#
# The server under test (trackgate with CORES=1, or nginx with one worker)
# runs pinned to CPU $SERVER_CPU; the load generator and the origin run on
# CPU $LOAD_CPU (taskset). Both servers stay up the whole time and are
# measured in turn, round after round (A/B, then B/A, …), so drift on the
# machine (other work, thermal, page cache) hits both alike; the figure to
# trust is the median of the per-round ratios trackgate/nginx.
#
# Scenarios: pixel (trackgate px.gif through the journal and the log sink vs
# nginx empty_gif with a buffered JSON access_log), proxy (20 KiB asset via
# upstream keep-alive), inject (the origin's 50 KiB page, gzip to the client:
# trackgate decodes, injects and re-encodes; nginx asks the origin for
# identity, sub_filter's the same snippet in and gzips at the same level).
# Then the latency at 50 % and 80 % of nginx's peak (open loop), wrk as a
# cross-check of the pixel peak, trackgate-only runs of collect, stealth and
# mix, memory with 10,000 idle keep-alive connections, start-up time and the
# binary size. Results go to $OUT: compare.md (the tables), raw.tsv (every
# run's JSON), latency.tsv and latency.svg (drawn by `loadtest chart`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-$ROOT/loadtest/results}
TG_PORT=${TG_PORT:-18180}
NGX_PORT=${NGX_PORT:-18190}
ORIGIN_PORT=${ORIGIN_PORT:-18181}
SCENARIOS=${SCENARIOS:-pixel proxy inject}
# The load generator's and origin's monoio driver. epoll by default: on the
# VM this was written on, a monoio client on io_uring spends most of its
# time in the kernel and tops out below what one nginx core serves, while on
# epoll it outruns wrk (PERFORMANCE.md has the figures).
LOAD_DRIVER=${LOAD_DRIVER:-epoll}
SECRET=compare-secret-0123456789abcdef

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
    echo "installing nginx and wrk (apt)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
need taskset || { echo "taskset (util-linux) is required" >&2; exit 2; }
need python3 || { echo "python3 is required (summaries)" >&2; exit 2; }

(cd "$ROOT" && cargo build --release -q -p trackgate -p loadtest)
TG=$ROOT/target/release/trackgate
LT=$ROOT/target/release/loadtest
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/trackgate-compare.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 500); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.02
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

# The origin, on the load generator's CPU.
taskset -c "$LOAD_CPU" "$LT" origin --addr "127.0.0.1:$ORIGIN_PORT" --driver "$LOAD_DRIVER" 2>"$WORK/origin.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

# trackgate: one core, the log sink behind the journal (the defaults).
tg_env=(env -i PATH="$PATH" SERVER_ADDR="127.0.0.1:$TG_PORT" FORWARD_DESTINATION="http://127.0.0.1:$ORIGIN_PORT"
    HMAC_SECRET="$SECRET" CORES=1 LOG_PATH="$WORK/events.ndjson" DATA_DIR="$WORK/data" LOG_LEVEL=warn
    JOURNAL_MAX_MB=16384 METRICS_ENABLED=true METRICS_ADDR="127.0.0.1:$((TG_PORT + 2))")
(cd "$WORK" && exec taskset -c "$SERVER_CPU" "${tg_env[@]}" "$TG" 2>"$WORK/trackgate.log") &
PIDS+=($!)

# nginx: one worker, the same snippet trackgate injects (config block,
# tracker, noscript pixel; `$` spelled ${dollar} since nginx expands
# variables in sub_filter's replacement).
# nginx reads at most 4 KiB per configuration token, so the snippet is
# split over several map variables that sub_filter's replacement joins.
python3 - "$ROOT/js/dist/tracker.min.js" >"$WORK/snippet.conf" <<'PY'
import sys
js = open(sys.argv[1]).read()
s = ('<script type="application/json" id="trackgate-config">{"endpoint":"/collect","pixel":"/px.gif",'
     '"pageview_id":"0192f4c6-3b1e-7c3a-9d0e-5f6a7b8c9d0e","token":"tg1.p.0192f4c6-3b1e-7c3a-9d0e-5f6a7b8c9d0e.'
     '1764500000.3f2a1b0c.' + 'k' * 43 + '","expires_at":1764501800}</script><script>' + js +
     '</script><noscript><img src="/px.gif?e=pageview&amp;pv=0192f4c6-3b1e-7c3a-9d0e-5f6a7b8c9d0e" alt="" '
     'width="1" height="1" style="display:none"></noscript></body>')
names = []
for i in range(0, len(s), 3000):
    part = s[i:i + 3000].replace('\\', '\\\\').replace("'", "\\'").replace('$', '${dollar}')
    names.append(f"snip{len(names)}")
    print(f"map $host ${names[-1]} {{ default '{part}'; }}")
print("# sub_filter replacement: " + "".join("${%s}" % n for n in names))
PY
SNIPPET=$(sed -n 's/^# sub_filter replacement: //p' "$WORK/snippet.conf")
mkdir -p "$WORK/nginx/logs"
chmod 755 "$WORK"  # nginx workers (nobody) use the temp paths inside
# The pixel and proxy locations are nginx-conf.sh's; inject is this script's.
# shellcheck source=loadtest/nginx-conf.sh
. "$ROOT/loadtest/nginx-conf.sh"
nginx_conf "$WORK/nginx" "$NGX_PORT" "$ORIGIN_PORT" "" "
    geo \$dollar { default \"\$\"; }
    include $WORK/snippet.conf;" "
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Accept-Encoding \"\";
            sub_filter '</body>' '$SNIPPET';
            sub_filter_once on;
            gzip on;
            gzip_comp_level 6;
            gzip_proxied any;
        }" >"$WORK/nginx.conf"
taskset -c "$SERVER_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" &
PIDS+=($!)
wait_port "$TG_PORT"
wait_port "$NGX_PORT"

RAW=$OUT/raw.tsv
: >"$RAW"
# run LABEL PORT SCENARIO [extra loadtest flags…]: one run; appends to raw.tsv, prints rps.
run() {
    local label=$1 port=$2 scen=$3
    shift 3
    local line
    line=$(taskset -c "$LOAD_CPU" "$LT" --url "http://127.0.0.1:$port" --scenario "$scen" --hmac-secret "$SECRET" \
        --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNS" --driver "$LOAD_DRIVER" --json "$@" 2>"$WORK/lt.err" | tail -1) || {
        echo "!!! loadtest reported errors for $label $scen:" >&2
        cat "$WORK/lt.err" >&2
    }
    printf '%s\t%s\n' "$label" "$line" >>"$RAW"
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rps"])' "$line"
}

{
echo "# trackgate vs nginx: $(date -u +%FT%TZ)"
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); kernel $(uname -r)"
echo "server CPU $SERVER_CPU, load generator + origin CPU $LOAD_CPU (monoio $LOAD_DRIVER driver); $CONNS connections; $DURATION per run after $WARMUP warm-up; $ROUNDS rounds"
echo "trackgate $("$TG" --version 2>/dev/null || echo '?') (git $(cd "$ROOT" && git rev-parse --short HEAD)); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## Peak throughput, closed loop (req/s)"
echo
echo "| scenario | round | trackgate | nginx | ratio |"
echo "|---|---|---|---|---|"
} | tee "$OUT/compare.md"

declare -A NGX_PEAK
for scen in $SCENARIOS; do
    ratios=()
    ngx_all=()
    for r in $(seq 1 "$ROUNDS"); do
        if (( r % 2 )); then
            t=$(run "trackgate r$r" "$TG_PORT" "$scen"); n=$(run "nginx r$r" "$NGX_PORT" "$scen")
        else
            n=$(run "nginx r$r" "$NGX_PORT" "$scen"); t=$(run "trackgate r$r" "$TG_PORT" "$scen")
        fi
        ratio=$(python3 -c "print(f'{$t/$n:.3f}' if $n else 'n/a')")
        ratios+=("$ratio"); ngx_all+=("$n")
        echo "| $scen | $r | $t | $n | $ratio |" | tee -a "$OUT/compare.md"
    done
    med=$(printf '%s\n' "${ratios[@]}" | python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.stdin):.3f}")')
    NGX_PEAK[$scen]=$(printf '%s\n' "${ngx_all[@]}" | python3 -c 'import sys,statistics; print(int(statistics.median(float(x) for x in sys.stdin)))')
    echo "| **$scen** | **median ratio** | | | **$med** |" | tee -a "$OUT/compare.md"
done

{
echo
echo "## Latency at fixed rates, open loop (µs; rate = share of nginx's median peak)"
echo
echo "| scenario | rate (req/s) | server | p50 | p90 | p99 | p99.9 | max | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
} | tee -a "$OUT/compare.md"
LAT=$OUT/latency.tsv
: >"$LAT"
for scen in $SCENARIOS; do
    for pct in 50 80; do
        rate=$(( NGX_PEAK[$scen] * pct / 100 ))
        for peer in trackgate nginx; do
            port=$TG_PORT; [ "$peer" = nginx ] && port=$NGX_PORT
            run "$peer $pct%" "$port" "$scen" --rate "$rate" >/dev/null
            line=$(tail -1 "$RAW" | cut -f2)
            printf '%s\t%s\n' "$peer $pct%" "$line" >>"$LAT"
            python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("| %s | %s (%s%%) | %s | %s | %s | %s | %s | %s | %s |" % (j["scenario"], j["rate"], sys.argv[3], sys.argv[2], j["p50_us"], j["p90_us"], j["p99_us"], j["p999_us"], j["max_us"], j["errors"]))' "$line" "$peer" "$pct" | tee -a "$OUT/compare.md"
        done
    done
done
"$LT" chart --input "$LAT" --out "$OUT/latency.svg"

# wrk as a cross-check of the pixel peak (another generator, epoll, no checks).
PX='/px.gif?e=pageview&url=https%3A%2F%2Fshop.example%2Fproducts%2F42&uid=u-81f3a2&sid=s-5c1d0e'
{
echo
echo "## Cross-check with wrk (pixel, closed loop, 1 thread, $CONNS connections, $DURATION)"
echo
echo "| server | req/s |"
echo "|---|---|"
for peer in trackgate nginx; do
    port=$TG_PORT; [ "$peer" = nginx ] && port=$NGX_PORT
    rps=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port$PX" | awk '/Requests\/sec/ {print $2}')
    echo "| $peer | $rps |"
done
echo
echo "## trackgate alone, closed loop (no nginx equivalent: tg1 verification, the journal)"
echo
echo "| scenario | req/s | p50 µs | p99 µs | errors |"
echo "|---|---|---|---|---|"
} | tee -a "$OUT/compare.md"
for scen in collect stealth mix; do
    run "trackgate" "$TG_PORT" "$scen" >/dev/null
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("| %s | %s | %s | %s | %s |" % (j["scenario"], j["rps"], j["p50_us"], j["p99_us"], j["errors"]))' "$(tail -1 "$RAW" | cut -f2)" | tee -a "$OUT/compare.md"
done

# CPU time per request at a fixed rate (open loop), each server measured in
# turn: the server's own CPU time (all its threads: utime + stime from
# /proc) divided by the requests it answered. Unlike peak req/s this does not
# depend on what else runs on the generator's CPU, so it is the steadier
# figure on a shared machine.
CPU_RATE=${CPU_RATE:-30000}
cpu_ticks() { # PID -> utime+stime of the whole process, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}
{
echo
echo "## CPU time per request at $CPU_RATE req/s, open loop (µs; server process, all threads)"
echo
echo "| scenario | round | trackgate | nginx | ratio trackgate/nginx |"
echo "|---|---|---|---|---|"
} | tee -a "$OUT/compare.md"
TICK=$(getconf CLK_TCK)
TG_PID=$(pgrep -f "^$TG\$" -n || true)
NGX_PID=$(cat "$WORK/nginx/nginx.pid")
NGX_WORKER=$(pgrep -P "$NGX_PID" -n)
for scen in pixel proxy; do
    ratios=()
    for r in $(seq 1 "$ROUNDS"); do
        declare -A us=()
        for peer in trackgate nginx; do
            port=$TG_PORT; pid=$TG_PID
            [ "$peer" = nginx ] && { port=$NGX_PORT; pid=$NGX_WORKER; }
            t0=$(cpu_ticks "$pid")
            run "$peer cpu" "$port" "$scen" --rate "$CPU_RATE" --warmup 0 >/dev/null
            t1=$(cpu_ticks "$pid")
            reqs=$(tail -1 "$RAW" | cut -f2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
            us[$peer]=$(python3 -c "print(f'{($t1-$t0)/$TICK*1e6/$reqs:.2f}')")
        done
        ratio=$(python3 -c "print(f'{${us[trackgate]}/${us[nginx]}:.3f}')")
        ratios+=("$ratio")
        echo "| $scen | $r | ${us[trackgate]} | ${us[nginx]} | $ratio |" | tee -a "$OUT/compare.md"
    done
    med=$(printf '%s\n' "${ratios[@]}" | python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.stdin):.3f}")')
    echo "| **$scen** | **median** | | | **$med** |" | tee -a "$OUT/compare.md"
done

# The generator's own floor: monoio's timer has a resolution of one
# millisecond, so in open loop a request can go out up to about a
# millisecond after its slot, and that counts as latency. At a rate far
# below either server's peak, what is measured is mostly that floor.
{
echo
echo "## The open-loop floor: pixel at 1,000 req/s (µs)"
echo
echo "| server | p50 | p90 | p99 | max |"
echo "|---|---|---|---|---|"
} | tee -a "$OUT/compare.md"
for peer in trackgate nginx; do
    port=$TG_PORT; [ "$peer" = nginx ] && port=$NGX_PORT
    run "$peer floor" "$port" pixel --rate 1000 >/dev/null
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("| %s | %s | %s | %s | %s |" % (sys.argv[2], j["p50_us"], j["p90_us"], j["p99_us"], j["max_us"]))' "$(tail -1 "$RAW" | cut -f2)" "$peer" | tee -a "$OUT/compare.md"
done

# Events dropped by trackgate during the runs (journal or queue full): must be 0.
dropped=$(curl -s "http://127.0.0.1:$((TG_PORT + 2))/metrics" | awk '/^[a-z_]*events_dropped_total/ {s += $2} END {print s + 0}')

# Memory with 10,000 idle keep-alive connections (each answered one pixel request).
mem_idle() { # PORT PID
    python3 - "$1" "$2" <<'PY'
import resource, socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1])
def tree_rss(pid):  # the process and its children (nginx's worker)
    total = rss(pid)
    try:
        for c in open(f"/proc/{pid}/task/{pid}/children").read().split():
            total += rss(c)
    except OSError:
        pass
    return total
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
before = tree_rss(pid)
socks = []
req = b"GET /px.gif?e=pageview HTTP/1.1\r\nHost: x\r\n\r\n"
for i in range(10000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    socks.append(s)
for s in socks:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
time.sleep(1)
after = tree_rss(pid)
print(f"{before} {after}")
PY
}
ulimit -n 30000 2>/dev/null || true
read -r tg_before tg_after < <(mem_idle "$TG_PORT" "$TG_PID")
read -r ngx_before ngx_after < <(mem_idle "$NGX_PORT" "$NGX_PID")

# Start-up: exec until the port accepts a connection (median of 5).
startup_ms=()
for i in 1 2 3 4 5; do
    port=$((TG_PORT + 10 + i))
    t0=$(date +%s%N)
    (cd "$WORK" && exec env -i PATH="$PATH" SERVER_ADDR="127.0.0.1:$port" FORWARD_DESTINATION="http://127.0.0.1:$ORIGIN_PORT" \
        HMAC_SECRET="$SECRET" CORES=1 LOG_PATH="$WORK/s$i.ndjson" DATA_DIR="$WORK/s$i" LOG_LEVEL=warn "$TG" 2>/dev/null) &
    sp=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do :; done
    t1=$(date +%s%N)
    kill "$sp"; wait "$sp" 2>/dev/null || true
    startup_ms+=("$(( (t1 - t0) / 1000 ))")
done
startup=$(printf '%s\n' "${startup_ms[@]}" | python3 -c 'import sys,statistics; print(f"{statistics.median(int(x) for x in sys.stdin)/1000:.1f}")')
{
echo
echo "## Other figures"
echo
echo "- trackgate events dropped during all runs (metric events_dropped_total): $dropped"
echo "- memory, 10,000 idle keep-alive connections (VmRSS, KiB, before → after): trackgate $tg_before → $tg_after; nginx (master + worker) $ngx_before → $ngx_after"
echo "- start-up, exec to accepting connections (median of 5): ${startup} ms (runs: ${startup_ms[*]} µs)"
echo "- binary size: trackgate $(stat -c %s "$TG") bytes ($(du -h "$TG" | cut -f1)); stripped $(strip -o "$WORK/tg.stripped" "$TG" && stat -c %s "$WORK/tg.stripped") bytes"
echo "- load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$OUT/compare.md"
echo "wrote $OUT/compare.md, $OUT/raw.tsv, $OUT/latency.tsv, $OUT/latency.svg" >&2
