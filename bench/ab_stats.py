#!/usr/bin/env python3
"""The tables of an A/B run of `bench/ab.sh`: medians, and the rounds compared in pairs.

    python3 bench/ab_stats.py RAW        # the raw lines ab.sh collects
    python3 bench/ab_stats.py OUT.md     # an ab.sh results file (its "raw:" section)

A raw line is "A |variant|runs|wall|tasks/s|spread|CPU µs/task|peak RSS|vol. cs|invol. cs|..."
(or "B ..."); a build of the harness from before the context-switch columns (the driver
engine's, 274a28a) has two columns fewer: its context switches are shown as "–".
ab.sh runs A and B of one variant back to back in every round (A B, then
B A), so the k-th A run and the k-th B run of a variant are a pair that saw the same
state of the machine. The second table compares them pair by pair, which the medians of
the first do not: the median of the pairs' CPU ratios B/A, with an interval that holds
the true median with at least 90% probability (between two order statistics of the
ratios: it assumes nothing of their distribution, which on this machine is skewed by
bursts of other work), and how many pairs had B below A, with the two-sided sign-test
p-value (how often a coin would split at least as unevenly). A change is worth believing
when the interval excludes 1.00, which takes 5 of 5 pairs one way, 8 of 9 (p = 0.04) or 9
of 11; below 5 pairs there is no such interval. An A/A run (one binary as both A and B)
is the check of these numbers.
"""

import math
import statistics as st
import sys


def read(path):
    """{(variant, 'A'|'B'): [(tasks/s, CPU µs/task, vol. cs, peak MiB), ...]} in run order."""
    rows = {}
    lines = open(path, encoding="utf-8").read().splitlines()
    if "raw:" in lines:
        lines = lines[lines.index("raw:") + 1:]
    for line in lines:
        if not line[:2] in ("A ", "B "):
            continue
        w, rest = line.split(" ", 1)
        c = [x.strip() for x in rest.strip().strip("|").split("|")]
        if len(c) < 8:
            continue
        rows.setdefault((c[0], w), []).append(
            (
                float(c[3]),
                float(c[5]),
                float(c[7]) if len(c) >= 12 else math.nan,
                float(c[6]),
            )
        )
    return rows


def count(x):
    """A median count for the table: "–" where the harness did not measure it (NaN)."""
    return "–" if math.isnan(x) else f"{x:.0f}"


def sign_test(k, n):
    """Two-sided p-value of k successes of n under a fair coin."""
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    p = sum(math.comb(n, i) for i in range(tail + 1)) / 2**n
    return min(1.0, 2 * p)


def median_interval(ratios, coverage=0.90):
    """The interval between two order statistics of `ratios` that holds their true
    median with probability at least `coverage` (distribution-free), and that probability.
    `None` when there are too few values for that coverage."""
    n = len(ratios)
    xs = sorted(ratios)
    best = None
    for k in range(1, n // 2 + 1):
        # P(x_(k) <= median <= x_(n-k+1)) = 1 - 2 P(Binomial(n, 1/2) <= k - 1)
        cov = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n
        if cov >= coverage:
            best = (xs[k - 1], xs[n - k], cov)
    return best


def tables(rows):
    out = [
        "| variant | A tasks/s | B tasks/s | B/A | A CPU µs/task | B CPU µs/task | B/A | A vol. ctx sw | B vol. ctx sw | A peak RSS MiB | B peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    paired = [
        "",
        "Paired by round (the A and B runs of one round ran back to back):",
        "",
        "| variant | pairs | CPU B/A, median of pairs | interval (≥ 90%) | B lower in | sign test p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v in sorted({k[0] for k in rows}):
        a, b = rows.get((v, "A"), []), rows.get((v, "B"), [])
        if not a or not b:
            continue

        def m(runs, i):
            return st.median(x[i] for x in runs)

        out.append(
            f"| {v} | {m(a, 0):.0f} | {m(b, 0):.0f} | {m(b, 0) / m(a, 0):.2f} | {m(a, 1):.3f} | "
            f"{m(b, 1):.3f} | {m(b, 1) / m(a, 1):.2f} | {count(m(a, 2))} | {count(m(b, 2))} | "
            f"{m(a, 3):.1f} | {m(b, 3):.1f} |"
        )
        ratios = [y[1] / x[1] for x, y in zip(a, b)]
        lower = sum(r < 1 for r in ratios)
        ci = median_interval(ratios)
        interval = f"{ci[0]:.2f}–{ci[1]:.2f} ({ci[2]:.0%})" if ci else "too few pairs"
        paired.append(
            f"| {v} | {len(ratios)} | {st.median(ratios):.2f} | {interval} | "
            f"{lower} of {len(ratios)} | {sign_test(lower, len(ratios)):.3f} |"
        )
    return "\n".join(out + paired)


if __name__ == "__main__":
    print(tables(read(sys.argv[1])))
