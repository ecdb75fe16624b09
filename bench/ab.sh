#!/usr/bin/env bash
# A/B: two builds of the `compare` binary, alternating run by run (A B, then B A, ...), each
# run its own child process; prints the medians of both and their ratios.
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
table=$(python3 - "$raw" <<'PY'
import sys, statistics as st
rows = {}
for l in open(sys.argv[1]):
    w, rest = l.split(' ', 1)
    c = [x.strip() for x in rest.strip().strip('|').split('|')]
    # variant | runs | wall s | tasks/s | spread % | CPU µs/task | peak RSS MiB | vol. ctx sw | ...
    rows.setdefault((c[0], w), []).append((float(c[3]), float(c[5]), float(c[7]), float(c[6])))
print("| variant | A tasks/s | B tasks/s | B/A | A CPU µs/task | B CPU µs/task | B/A | A vol. ctx sw | B vol. ctx sw | A peak RSS MiB | B peak RSS MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for v in sorted({k[0] for k in rows}):
    A, B = rows.get((v, 'A'), []), rows.get((v, 'B'), [])
    if not A or not B:
        continue
    m = lambda L, i: st.median(x[i] for x in L)
    print(f"| {v} | {m(A,0):.0f} | {m(B,0):.0f} | {m(B,0)/m(A,0):.2f} | {m(A,1):.3f} | {m(B,1):.3f} | "
          f"{m(B,1)/m(A,1):.2f} | {m(A,2):.0f} | {m(B,2):.0f} | {m(A,3):.1f} | {m(B,3):.1f} |")
PY
)
echo "$table"
if [ -n "${OUT:-}" ]; then
  { echo "# A = $a"; echo "# B = $b"; echo "# rounds=$rounds variants=$variants args: $*"; echo;
    echo "$table"; echo; echo "raw:"; cat "$raw"; } > "$OUT"
fi
rm -f "$raw"
