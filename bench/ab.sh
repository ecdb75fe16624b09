#!/usr/bin/env bash
# A/B: two builds of the `compare` binary, alternating run by run (A B, then B A, ...), each
# run its own child process; prints the medians of both and their ratios, then the rounds
# compared in pairs (the median of the pairs' CPU ratios with an interval that holds the
# true median with at least 90% probability, and a sign test: bench/ab_stats.py, which
# also re-reads an OUT file).
#
#   bash bench/ab.sh ROUNDS VARIANTS BIN_A BIN_B [extra compare args...]
#   bash bench/ab.sh 5 common,no-queue,smart /tmp/compare-base target-bench/release/compare
#
# With OUT=path the raw result lines and the table are also written there.
set -euo pipefail
rounds=$1; variants=$2; a=$3; b=$4; shift 4
raw=$(mktemp)
for r in $(seq 1 "$rounds"); do
  for v in ${variants//,/ }; do
    if (( r % 2 )); then order="A B"; else order="B A"; fi
    for w in $order; do
      bin=$a; [ "$w" = B ] && bin=$b
      line=$("$bin" --variants "$v" --rounds 1 --quiet-wait 3 "$@" 2>&1 | grep -E "^\| $v \|" | head -1)
      echo "$w $line" >> "$raw"
    done
  done
done
table=$(python3 "$(dirname "$0")/ab_stats.py" "$raw")
echo "$table"
if [ -n "${OUT:-}" ]; then
  { echo "# A = $a"; echo "# B = $b"; echo "# rounds=$rounds variants=$variants args: $*"; echo;
    echo "$table"; echo; echo "raw:"; cat "$raw"; } > "$OUT"
fi
rm -f "$raw"
