#!/usr/bin/env bash
# The measurement plan behind BENCHMARKS.md (the measuring side). Each section writes
# bench/results/<name>.{md,json}. Usage: bash bench/run_all.sh [section...]
# Sections: default sleep nsweep csweep threads (default: all of them), and pools
# (the default workload for the pools and sem-before-joinset only: a quick re-check).
# The machine is shared and has 2 cores: check `top -bn1 | head -15` first.
# With mimalloc as the compare binary's global allocator (the library never sets one):
#   CARGO_TARGET_DIR=target-bench-mimalloc cargo build --release -p nb-aiopool-bench \
#       --bin compare --features mimalloc
#   target-bench-mimalloc/release/compare --rounds 3
# Old engine against new, alternating: bash bench/compare_engines.sh [ROUNDS].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-bench}"
compare="$CARGO_TARGET_DIR/release/compare"
srcid() { echo "lib commit $(git rev-parse --short HEAD), src sha1 $(git ls-files -co --exclude-standard src | sort | xargs cat | sha1sum | cut -c1-12)"; }
if [ -z "${NO_BUILD:-}" ]; then  # NO_BUILD=1 reuses the last build (and what it was built from)
    cargo build --release -p nb-aiopool-bench --bin compare
    srcid > "$compare.built-from"
fi
quiet="--quiet-wait=${QUIET_WAIT:-60}"
out=bench/results
mkdir -p "$out"

run() { # name, compare args...
    local name="$1"; shift
    {
        echo "<!-- $(date -u +%FT%TZ) built from $(cat "$compare.built-from" 2>/dev/null || echo '?')," \
             "load $(cut -d' ' -f1-3 /proc/loadavg) -->"
        echo "\`compare $*\`"
        "$compare" "$@" "$quiet" --json "$out/$name.json"
    } | tee "$out/$name.md"
}

pools=common,no-queue,smart,sem-before-joinset
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(default sleep nsweep csweep threads)
for s in "${sections[@]}"; do
    case "$s" in
    default) run default --rounds 5 --python ;;
    pools) run pools-default --variants "$pools" --rounds 5 ;;
    sleep) run sleep5 --workload sleep:5 -n 200000 --rounds 3 --python ;;
    nsweep)
        for n in 10000 100000 1000000 10000000; do
            run "n$n" -n "$n" --variants "$pools" --rounds 3
        done ;;
    csweep)
        for c in 1 100 1000 100000; do
            run "c$c" -c "$c" --variants "$pools" --rounds 3
        done ;;
    threads)
        run t1 --threads 1 --variants "$pools" --rounds 3
        run t2 --threads 2 --variants "$pools" --rounds 3
        run tcur --current-thread --variants "$pools" --rounds 3 ;;
    *) echo "unknown section $s" >&2; exit 2 ;;
    esac
done
