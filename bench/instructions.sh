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
set -euo pipefail
variants=$1; n=$2; shift 2
args=()
while [ "$1" != "--" ]; do args+=("$1"); shift; done
shift
bins=("$@")
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
printf "| variant |"; for b in "${bins[@]}"; do printf " %s |" "$b"; done; echo
printf "|---|"; for _ in "${bins[@]}"; do printf -- "---:|"; done; echo
for v in ${variants//,/ }; do
  printf "| %s |" "$v"
  for b in "${bins[@]}"; do
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
