#!/usr/bin/env python3
"""Issue 9's target 5 over many sets of `bench/peak_c100000.sh`, pooled.

One set's medians (9 rounds) vary from set to set by more than the target's margin: the
peak measures how far the producer gets ahead of the workers, which the machine's load
moves by 2x from one run to the next. This reads the runs of several sets (their
markdown files, or one file holding several) and prints, for each build (named by
`--name OLD=label NEW=label` per file, or the script's OLD/NEW), every set's
smart / common ratio and the pooled median and quartiles of each variant's peak.

    python3 bench/peak_pooled.py [--same] FILE...

With --same, OLD and NEW of a file are one build (the same binary passed twice), pooled
under "head".
"""
import collections
import statistics as st
import sys

args = sys.argv[1:]
same = "--same" in args
files = [a for a in args if a != "--same"]
if not files:
    sys.exit(__doc__)

pooled = collections.defaultdict(list)
print("| file | set | build | common MiB | smart MiB | smart ÷ common |")
print("|---|---:|---|---:|---:|---:|")
for f in files:
    sets = collections.defaultdict(lambda: collections.defaultdict(list))
    n = 0
    for line in open(f):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if line.startswith("| round |"):
            n += 1
        if len(cells) == 5 and cells[0].isdigit():
            build = "head" if same else cells[1]
            sets[(max(n, 1), build)][cells[2]].append(float(cells[3]))
            pooled[(build, cells[2])].append(float(cells[3]))
    for (k, build), v in sorted(sets.items()):
        c, s = st.median(v["common"]), st.median(v["smart"])
        print(f"| {f.split('/')[-1]} | {k} | {build} | {c:.1f} | {s:.1f} | {s / c:.2f}× |")

print()
print("| build | variant | runs | pooled median MiB | quartiles | ÷ common |")
print("|---|---|---:|---:|---|---:|")
for build in sorted({b for b, _ in pooled}):
    common = st.median(pooled[(build, "common")])
    for v in ("common", "smart", "smart-shared"):
        x = pooled.get((build, v))
        if not x:
            continue
        q = st.quantiles(x, n=4)
        print(
            f"| {build} | {v} | {len(x)} | {st.median(x):.1f} | {q[0]:.1f}–{q[2]:.1f} "
            f"| {st.median(x) / common:.2f}× |"
        )
