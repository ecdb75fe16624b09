#!/usr/bin/env bash
# http_load --mode pool against wrk, one loopback server, one invocation.
#
# Starts `http_load --serve-only` once (127.0.0.1, a free port, its own process), then for
# each connection count runs, ROUNDS times and alternating, `wrk -t1 -cN -dD` and
# `http_load --mode pool --concurrency N --duration-s D` (one thread, as wrk -t1) for each
# client in CLIENTS, and prints the medians: requests/s, the ratio to wrk, the CPU
# microseconds per request of the load generator (user + system, getrusage of the process
# through /usr/bin/time, startup included) and of the server (from /proc/<pid>/stat).
#
# Usage: demos/compare_http.sh [output.md]
#   env: CONNS="100 1000"  ROUNDS=3  DURATION=5  CLIENTS="raw conn"  (legacy: the old client)
#        HTTP_LOAD=path/to/http_load (default: build it with cargo, release)
# Installs wrk (Debian package `wrk`) when it is missing.
set -euo pipefail

CONNS=${CONNS:-"100 1000"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-"raw conn"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-}

if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get)..." >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq wrk >&2
fi
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian package \`time\`)" >&2; exit 1; }

if [ -z "${HTTP_LOAD:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p nb-aiopool-demos --bin http_load)
    # cargo ran in $ROOT: a relative CARGO_TARGET_DIR is relative to it.
    target="${CARGO_TARGET_DIR:-target}"
    case "$target" in /*) ;; *) target="$ROOT/$target" ;; esac
    HTTP_LOAD="$target/release/http_load"
fi

TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# Enough sockets for the largest connection count on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The server: bounded lifetime (the runs plus a margin), loopback only.
runs=0
for _ in $CONNS; do runs=$((runs + ROUNDS * (1 + $(echo "$CLIENTS" | wc -w)))); done
"$HTTP_LOAD" --serve-only --port 0 --serve-seconds $((runs * (DURATION + 3) + 60)) \
    --monitor-interval-ms 0 >"$TMP/server.out" 2>"$TMP/server.err" &
SERVER_PID=$!
for _ in $(seq 50); do
    grep -q LISTENING "$TMP/server.out" 2>/dev/null && break
    sleep 0.1
done
URL=$(awk '/^LISTENING/ {print $2}' "$TMP/server.out")
[ -n "$URL" ] || { echo "the server did not start" >&2; cat "$TMP/server.err" >&2; exit 1; }

# CPU ticks (user + system) the server has used so far.
server_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
HZ=$(getconf CLK_TCK)

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# One run: prints "rps client_cpu_us_per_req server_cpu_us_per_req".
run_wrk() {
    local c=$1 s0 s1
    s0=$(server_ticks)
    /usr/bin/time -f "%U %S" -o "$TMP/time" wrk -t1 -c"$c" -d"${DURATION}s" "$URL" >"$TMP/wrk.out"
    s1=$(server_ticks)
    local n rps
    n=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
    if grep -q "Socket errors" "$TMP/wrk.out"; then echo "warning: wrk -c$c: $(grep "Socket errors" "$TMP/wrk.out")" >&2; fi
    rps=$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk.out")
    awk -v n="$n" -v rps="$rps" -v s="$((s1 - s0))" -v hz="$HZ" '{printf "%.0f %.2f %.2f\n", rps, ($1 + $2) * 1e6 / n, s / hz * 1e6 / n}' "$TMP/time"
}
run_pool() {
    local c=$1 client=$2 s0 s1
    s0=$(server_ticks)
    /usr/bin/time -f "%U %S" -o "$TMP/time" "$HTTP_LOAD" --mode pool --client "$client" \
        --runtime current --url "$URL" --concurrency "$c" --requests 100000000 \
        --duration-s "$DURATION" --max-seconds $((DURATION * 4)) --no-progress \
        --monitor-interval-ms 0 >"$TMP/pool.out" 2>"$TMP/pool.err" ||
        { echo "http_load failed:" >&2; cat "$TMP/pool.err" >&2; exit 1; }
    s1=$(server_ticks)
    local line n rps errors
    line=$(grep '^RESULT' "$TMP/pool.out")
    n=$(echo "$line" | grep -oE ' requests=[0-9]+' | cut -d= -f2)
    rps=$(echo "$line" | grep -oE ' rps=[0-9]+' | cut -d= -f2)
    errors=$(echo "$line" | grep -oE ' errors=[0-9]+' | cut -d= -f2)
    [ "$errors" = 0 ] || echo "warning: $client at -c$c: $errors errors" >&2
    awk -v n="$n" -v rps="$rps" -v s="$((s1 - s0))" -v hz="$HZ" '{printf "%.0f %.2f %.2f\n", rps, ($1 + $2) * 1e6 / n, s / hz * 1e6 / n}' "$TMP/time"
}

{
    echo "# http_load --mode pool vs wrk, $(date -u +%Y-%m-%d) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo
    echo "One server (\`http_load --serve-only\`, hyper, 32-byte body) on $URL in its own"
    echo "process; $ROUNDS rounds of ${DURATION} s per tool and connection count, alternating"
    echo "(wrk, then each client, then the next round). wrk: \`wrk -t1 -cN\`; pool:"
    echo "\`http_load --mode pool --runtime current --concurrency N --client <client>\` (every"
    echo "request goes through a CommonAioPool(N, N)). CPU µs/req: user + system time of the"
    echo "load generator's process (getrusage, startup included) and of the server, divided"
    echo "by the requests of the run. Medians of the rounds."
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo '```text'
} | tee "$TMP/report"

declare -A RESULTS
for c in $CONNS; do
    for round in $(seq "$ROUNDS"); do
        r=$(run_wrk "$c")
        RESULTS[$c,wrk]+="$r"$'\n'
        echo "c=$c round $round wrk            $r" | tee -a "$TMP/report"
        for client in $CLIENTS; do
            r=$(run_pool "$c" "$client")
            RESULTS[$c,$client]+="$r"$'\n'
            printf 'c=%s round %s pool --client %-6s %s\n' "$c" "$round" "$client" "$r" | tee -a "$TMP/report"
        done
    done
done

{
    echo "(columns: req/s, load generator CPU µs/req, server CPU µs/req)"
    echo '```'
    echo
    echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| conns | tool | req/s | ratio to wrk | load generator CPU µs/req | server CPU µs/req |"
    echo "|---:|---|---:|---:|---:|---:|"
    for c in $CONNS; do
        wrk_rps=$(printf '%s' "${RESULTS[$c,wrk]}" | awk 'NF {print $1}' | median)
        for tool in wrk $CLIENTS; do
            rows=${RESULTS[$c,$tool]}
            rps=$(printf '%s' "$rows" | awk 'NF {print $1}' | median)
            cpu=$(printf '%s' "$rows" | awk 'NF {print $2}' | median)
            srv=$(printf '%s' "$rows" | awk 'NF {print $3}' | median)
            name=$([ "$tool" = wrk ] && echo "wrk -t1" || echo "pool, $tool client")
            ratio=$(awk -v a="$rps" -v b="$wrk_rps" 'BEGIN {printf "%.2fx", a / b}')
            printf '| %s | %s | %.0f | %s | %.1f | %.1f |\n' "$c" "$name" "$rps" "$ratio" "$cpu" "$srv"
        done
    done
} | tee -a "$TMP/report"

if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    cp "$TMP/report" "$OUT"
    echo "saved $OUT" >&2
fi
