#!/usr/bin/env bash
# Instructions executed per task, counted by valgrind's callgrind: deterministic (the same
# build gives the same count to within a few per cent), unlike time on this shared machine.
# It counts work, not waiting, cache misses or lock contention; under valgrind the threads
# of a multi-thread runtime run one at a time. Each variant is its own child run.
#
#   bash bench/instructions.sh VARIANTS N [compare args...] -- BIN [BIN...]
#   bash bench/instructions.sh common,no-queue,smart 100000 --current-thread -- /tmp/old /tmp/new
#
# Prints one row per variant, one column per binary (instructions per task, whole process,
# setup included: compare a variant across binaries, or against a pattern in one binary).
#
# With CACHE=1 it runs cachegrind's cache simulation instead (slower) and prints
# "instructions / L1 data misses" per task: the lines a task touches that are not in the
# simulated L1 (this machine's sizes), a deterministic view of a change of memory layout,
# which timings here are too noisy to show. The simulation runs threads one at a time, so
# it cannot show lines moving between cores: use it with --current-thread.
#
# With ATOMICS=1 it prints atomic read-modify-writes per task instead (x86-64
# `lock`-prefixed instructions and memory `xchg`, from a callgrind profile with
# --dump-instr=yes, by bench/atomics.py): a part of the CPU per task that instruction
# counts understate. Uncontended, one costs about 5 ns on this machine (100M `fetch_add`s
# on one local atomic in a loop: 5.1 ns each, against 0.3 ns for a plain add); contended,
# more. A multi-thread run counts the same operations, without their contention. With
# ATOMICS=1 BY_FUNCTION=1, the functions that execute them follow the table.
set -euo pipefail
variants=$1; n=$2; shift 2
args=()
while [ "$1" != "--" ]; do args+=("$1"); shift; done
shift
bins=("$@")
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
printf "| variant |"; for b in "${bins[@]}"; do printf " %s |" "$b"; done; echo
printf "|---|"; for _ in "${bins[@]}"; do printf -- "---:|"; done; echo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
details=()
for v in ${variants//,/ }; do
  printf "| %s |" "$v"
  for b in "${bins[@]}"; do
    if [ "${ATOMICS:-0}" = 1 ]; then
      valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$tmp/cg.out" \
        "$b" --child="$v" -n "$n" "${args[@]}" >/dev/null 2>&1
      out=$(python3 "$(dirname "$0")/atomics.py" "$tmp/cg.out" "$n" --by-function)
      printf " %s |" "$(head -1 <<<"$out")"
      details+=("$v, $b:" "$(tail -n +2 <<<"$out")")
      continue
    fi
    if [ "${CACHE:-0}" = 1 ]; then
      out=$(valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null "$b" --child="$v" -n "$n" "${args[@]}" 2>&1)
      ir=$(sed -n 's/.*I *refs: *\([0-9,]*\).*/\1/p' <<<"$out" | tr -d ,)
      d1=$(sed -n 's/.*D1 *misses: *\([0-9,]*\).*/\1/p' <<<"$out" | tr -d ,)
      printf " %d / %s |" $(( ir / n )) "$(python3 -c "print(f'{$d1 / $n:.1f}')")"
      continue
    fi
    ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$b" --child="$v" -n "$n" "${args[@]}" 2>&1 \
      | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    printf " %d |" $(( ir / n ))
  done
  echo
done
if [ "${BY_FUNCTION:-0}" = 1 ]; then
  for d in "${details[@]+"${details[@]}"}"; do echo "$d"; done
fi
