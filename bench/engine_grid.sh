#!/usr/bin/env bash
# Issue 9's benchmark grid at this commit, one run after the other (never in parallel:
# the machine has 2 cores). Writes bench/results/<date>-<commit>-<name>.md (and .json
# where compare writes one). About 25 minutes on a quiet machine.
#
#   bash bench/engine_grid.sh [STEP ...]     (default: every step)
#
# Steps: all-system all-mimalloc current-thread sleep5 c100000 n10000000 isolation
# Env: ROUNDS (default 3), QUIET_WAIT (default 5 s before each run).
# The old-against-new engine comparison is bench/compare_engines.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${ROUNDS:-3}"
quiet="${QUIET_WAIT:-5}"
rev="$(git rev-parse --short=7 HEAD)"
day="$(date -u +%F)"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all-system all-mimalloc current-thread sleep5 c100000 n10000000 isolation)
git diff --quiet HEAD -- src bench/src || echo "warning: src/ or bench/src/ has uncommitted edits" >&2

CARGO_TARGET_DIR=target-bench cargo build --release -p nb-aiopool-bench --bins
sys=target-bench/release/compare

record() { # name, command...
    local name="$1"
    shift
    local out="bench/results/$day-$rev-$name"
    {
        echo "<!-- $(date -u +%FT%TZ) library $rev, load $(cut -d' ' -f1-3 /proc/loadavg) -->"
        echo "\`${*#target-bench*/release/}\`"
        echo
        "$@"
        echo
        echo "<!-- ended $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg) -->"
    } >"$out.md"
    echo "wrote $out.md" >&2
}

for step in "${steps[@]}"; do
    case "$step" in
    all-system)
        record all-system "$sys" --rounds "$rounds" --quiet-wait "$quiet" \
            --json "bench/results/$day-$rev-all-system.json" ;;
    all-mimalloc)
        CARGO_TARGET_DIR=target-bench-mimalloc cargo build --release -p nb-aiopool-bench \
            --bin compare --features mimalloc
        record all-mimalloc target-bench-mimalloc/release/compare --rounds "$rounds" \
            --quiet-wait "$quiet" --json "bench/results/$day-$rev-all-mimalloc.json" ;;
    current-thread)
        record current-thread "$sys" --current-thread --rounds "$rounds" --quiet-wait "$quiet" \
            --variants common,smart,no-queue,sem-before-joinset,spawn-permit-moved \
            --json "bench/results/$day-$rev-current-thread.json" ;;
    sleep5)
        record sleep5 "$sys" --workload sleep:5 -n 200000 --rounds "$rounds" --quiet-wait "$quiet" \
            --variants common,no-queue,smart,sem-before-joinset,spawn-permit-moved \
            --json "bench/results/$day-$rev-sleep5.json" ;;
    c100000)
        record c100000 "$sys" -c 100000 --rounds "$rounds" --quiet-wait "$quiet" \
            --variants common,smart --json "bench/results/$day-$rev-c100000.json" ;;
    n10000000)
        record n10000000 "$sys" -n 10000000 --rounds 2 --quiet-wait "$quiet" \
            --variants common,no-queue,smart,sem-before-joinset \
            --json "bench/results/$day-$rev-n10000000.json" ;;
    isolation)
        record isolation target-bench/release/isolation --rounds 5 ;;
    *)
        echo "unknown step $step" >&2
        exit 2 ;;
    esac
done
