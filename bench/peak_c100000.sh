#!/usr/bin/env bash
# Issue 9's target 5 (SmartAioPool's peak RSS at C = 100,000 within 1.5x CommonAioPool's),
# for two builds of `compare`: R alternating rounds (default 9), each running OLD's
# common, smart and smart-shared, then NEW's, each its own child process (1M tiny tasks,
# 2 workers, 407-byte payloads). Writes every run and the medians, with smart / common,
# to OUT (markdown) and prints the medians.
#
#   bash bench/peak_c100000.sh OLD/compare NEW/compare OUT.md [R]
set -euo pipefail
OLD=$1; NEW=$2; OUT=$3; R=${4:-9}
echo "| round | build | variant | peak RSS MiB | CPU µs/task |" > $OUT
echo "|---|---|---|---:|---:|" >> $OUT
for r in $(seq 1 $R); do
  for b in OLD NEW; do
    bin=${!b}
    for v in common smart smart-shared; do
      line=$($bin --child=$v -c 100000 | tail -1)
      rss=$(grep -o "peak_rss_mib=[0-9.]*" <<<"$line" | cut -d= -f2)
      cpu=$(grep -o "cpu_us_per_task=[0-9.]*" <<<"$line" | cut -d= -f2)
      echo "| $r | $b | $v | $rss | $cpu |" >> $OUT
    done
  done
done
python3 - "$OUT" <<'PY'
import sys,statistics as st,collections
rows=[l.split('|')[1:-1] for l in open(sys.argv[1]) if l.startswith('| ') and l.split('|')[1].strip().isdigit()]
d=collections.defaultdict(list); c=collections.defaultdict(list)
for r,b,v,rss,cpu in rows:
    d[(b.strip(),v.strip())].append(float(rss)); c[(b.strip(),v.strip())].append(float(cpu))
out=["","| build | variant | median peak MiB (min–max) | median CPU µs/task | smart ÷ common |","|---|---|---:|---:|---:|"]
for b in ("OLD","NEW"):
    for v in ("common","smart","smart-shared"):
        x=d[(b,v)]
        ratio="" if v=="common" else f"{st.median(x)/st.median(d[(b,'common')]):.2f}×"
        out.append(f"| {b} | {v} | {st.median(x):.1f} ({min(x):.1f}–{max(x):.1f}) | {st.median(c[(b,v)]):.2f} | {ratio} |")
open(sys.argv[1],'a').write("\n".join(out)+"\n")
print("\n".join(out))
PY
