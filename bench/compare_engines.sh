#!/usr/bin/env bash
# Old engine against new engine, alternating run by run in one invocation.
#
#   bash bench/compare_engines.sh [ROUNDS]            (default 3 rounds)
#
# OLD engine: commit $OLD_REV (default 274a28a, the "driver" engine) checked out in the
# worktree $OLD_TREE (default /work/old-engine), built into $OLD_TARGET (/work/target-old).
# NEW engine: this repository's HEAD checked out in the worktree $NEW_TREE (default
# /work/new-engine; a clean copy, so uncommitted edits in the main work tree are not
# measured), built into $NEW_TARGET (/work/target-bench).
#
# Both builds use THIS work tree's bench harness (bench/Cargo.toml and bench/src are
# copied over each worktree's bench/ before building), so the harness code, its variants
# and its measurements (CPU of all threads, VmHWM, context switches) are identical and only
# the library differs. bench/ did not change between 274a28a and e58db8a apart from this.
#
# Each run is `compare --variants V --rounds 1` (its own child process, after the
# harness's quiet wait). Order per round: for each variant, old then new in odd rounds,
# new then old in even rounds (so neither build always runs first).
# Workload: compare's default (1M tiny tasks, C = 1000, 2 worker threads, producer in
# block_on, 407-byte payloads), or whatever is in $COMPARE_ARGS (e.g. "-n 200000").
# Writes bench/results/<date>-<new short commit>-engines.{md,json}.
#
# OLD_REV may name any other commit too (e.g. the slot engine before a change: then set
# OLD_TREE and OLD_TARGET to a worktree and target of its own). The harness is built
# without its flow-control variants (cargo feature `flow`), which older libraries lack.
# Env: VARIANTS (default common,no-queue,smart,sem-before-joinset), QUIET_WAIT (default
# 20 s), FEATURES (e.g. mimalloc; also names the output ...-engines-mimalloc), SUFFIX (appended
# to the output name, e.g. run2), NO_BUILD=1 (reuse both builds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
main="$PWD"
rounds="${1:-3}"
old_rev="${OLD_REV:-274a28a}"
old_tree="${OLD_TREE:-/work/old-engine}"
new_tree="${NEW_TREE:-/work/new-engine}"
old_target="${OLD_TARGET:-/work/target-old}"
new_target="${NEW_TARGET:-/work/target-bench}"
variants="${VARIANTS:-common,no-queue,smart,sem-before-joinset}"
quiet="${QUIET_WAIT:-20}"
features="${FEATURES:-}"
new_rev="$(git rev-parse HEAD)"
old_rev="$(git rev-parse "$old_rev")"

prepare() { # tree rev
    local tree="$1" rev="$2"
    if [ ! -e "$tree/.git" ]; then
        git worktree add --detach "$tree" "$rev"
    fi
    # Only this script's own worktrees are moved: refuse a tree with local edits.
    if [ "$(git -C "$tree" rev-parse HEAD)" != "$rev" ]; then
        git -C "$tree" diff --quiet -- . ':!bench' ':!Cargo.lock' \
            || { echo "$tree has local edits outside bench/; not touching it" >&2; exit 1; }
        git -C "$tree" checkout -q -f --detach "$rev"
    fi
    git -C "$tree" diff --quiet "$rev" -- src \
        || { echo "$tree/src differs from $rev" >&2; exit 1; }
    rm -rf "$tree/bench/src"
    cp -r "$main/bench/src" "$tree/bench/src"
    cp "$main/bench/Cargo.toml" "$tree/bench/Cargo.toml"
}

build() { # tree target
    # Without the flow-control variants, which need a library of issue 11 or later.
    local feat=(--no-default-features --features "pools${features:+,$features}")
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build --release -p nb-aiopool-bench --bin compare "${feat[@]}")
}

if [ -z "${NO_BUILD:-}" ]; then
    # cargo adds the harness's new crates to each worktree's Cargo.lock (not committed).
    prepare "$old_tree" "$old_rev"
    prepare "$new_tree" "$new_rev"
    build "$old_tree" "$old_target"
    build "$new_tree" "$new_target"
fi
# What the binaries were built from (with NO_BUILD=1, whatever the worktrees hold).
old_rev="$(git -C "$old_tree" rev-parse HEAD)"
new_rev="$(git -C "$new_tree" rev-parse HEAD)"
old_bin="$old_target/release/compare"
new_bin="$new_target/release/compare"

day="$(date -u +%F)"
tag="engines${features:+-$features}${SUFFIX:+-$SUFFIX}"
out="bench/results/$day-${new_rev:0:7}-$tag"
mkdir -p bench/results
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
started="$(date -u +%FT%TZ)"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

IFS=, read -r -a vs <<<"$variants"
n=0
for r in $(seq 1 "$rounds"); do
    order=(old new)
    [ $((r % 2)) -eq 0 ] && order=(new old)
    for v in "${vs[@]}"; do
        for b in "${order[@]}"; do
            bin="$old_bin"
            [ "$b" = new ] && bin="$new_bin"
            n=$((n + 1))
            f="$tmp/$(printf %03d "$n")-$b-$v-$r"
            # shellcheck disable=SC2086
            "$bin" --variants "$v" --rounds 1 --quiet-wait "$quiet" ${COMPARE_ARGS:-} \
                --json "$f.json" >/dev/null 2>"$f.err" \
                || { cat "$f.err" >&2; exit 1; }
            grep -h "round 1" "$f.err" | sed "s/^  round 1/  $b round $r/" >&2
        done
    done
done

python3 - "$tmp" "$out" "$rounds" "$variants" "$old_rev" "$new_rev" "$started" \
    "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" "${COMPARE_ARGS:-}" "$features" <<'EOF'
import json, os, statistics, sys
tmp, out, rounds, variants, old_rev, new_rev, started, load0, load1, cargs, feats = sys.argv[1:]
variants = variants.split(",")
runs, config = [], None
for f in sorted(os.listdir(tmp)):
    if not f.endswith(".json"):
        continue
    seq, build, rest = f[:-5].split("-", 2)
    j = json.load(open(os.path.join(tmp, f)))
    config = j["config"]
    for r in j["runs"]:
        r["seq"], r["build"], r["round"] = int(seq), build, int(rest.rsplit("-", 1)[1])
        runs.append(r)

def med(build, v, k):
    xs = [r[k] for r in runs if r["build"] == build and r["variant"] == v and r[k] is not None]
    return statistics.median(xs) if xs else float("nan")

def fmt(x, d):
    return "-" if x != x else f"{x:,.{d}f}"

L = []
L.append(f"<!-- {started} to end; load (1/5/15 min) at start {load0}, at end {load1} -->")
L.append(f"`bash bench/compare_engines.sh {rounds}` (COMPARE_ARGS='{cargs}', FEATURES='{feats}')\n")
L.append(f"Old build {old_rev[:7]}, new build {new_rev[:7]} (274a28a is the driver engine, "
         "later commits the slot engine); "
         f"same harness in both. Config: {json.dumps(config)}. Medians of {rounds} rounds, "
         "old and new alternating run by run.\n")
for metric, d, name in [("tasks_per_s", 0, "throughput, tasks/s"),
                        ("cpu_us_per_task", 3, "CPU µs per task (all threads)"),
                        ("peak_rss_mib", 1, "peak RSS MiB (VmHWM)"),
                        ("vol_cs", 0, "voluntary context switches (all threads, during the run)"),
                        ("invol_cs", 0, "involuntary context switches"),
                        ("wall_s", 3, "wall s")]:
    L.append(f"### {name}\n")
    L.append("| variant | old | new | new/old | old x sem-before-joinset | new x sem-before-joinset |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for v in variants:
        o, n = med("old", v, metric), med("new", v, metric)
        oj, nj = med("old", "sem-before-joinset", metric), med("new", "sem-before-joinset", metric)
        L.append(f"| {v} | {fmt(o, d)} | {fmt(n, d)} | {fmt(n / o if o else float('nan'), 2)} | "
                 f"{fmt(o / oj if oj else float('nan'), 2)} | {fmt(n / nj if nj else float('nan'), 2)} |")
    L.append("")
L.append("### every run, in the order they ran\n")
L.append("| round | build | variant | wall s | tasks/s | CPU µs/task | peak RSS MiB | vol cs | invol cs | load1 | busy % before |")
L.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in sorted(runs, key=lambda r: r["seq"]):
    L.append(f"| {r['round']} | {r['build']} | {r['variant']} | {r['wall_s']:.3f} | {r['tasks_per_s']:,.0f} | "
             f"{r['cpu_us_per_task']:.3f} | {r['peak_rss_mib']:.1f} | {r['vol_cs']:.0f} | {r['invol_cs']:.0f} | "
             f"{r['load1']:.2f} | {r['busy_pct_before']:.0f} |")
text = "\n".join(L) + "\n"
open(out + ".md", "w").write(text)
json.dump({"old": old_rev, "new": new_rev, "config": config, "runs": runs}, open(out + ".json", "w"), indent=1)
print(text)
print(f"written {out}.md and {out}.json", file=sys.stderr)
EOF
