#!/usr/bin/env python3
"""Checks that every file in bench/results/ is cited by BENCHMARKS.md or RELIABILITY.md.

Issue 9 asks that bench/results/ keep only the runs the documents cite. A citation is a
file name in backticks or parentheses, whole or abbreviated:

- `bench/results/2026-12-03-4a4dfdc-cache.md`, or the name alone;
- `…-4a4dfdc-cache.md`: the leading date left out (`…` stands for any prefix);
- `…-6eb372d-{glibc,mimalloc}.{md,json}`: brace alternatives, expanded;
- a name without its extension cites every extension (`…-10m` cites `…-10m.md`);
- `*` is a wildcard.

Lenient by design: an abbreviated citation matches whatever prefix, not only the one its
paragraph means.

Prints the files nobody cites and exits with 1 if there are any. Run from the repository's
root: `python3 bench/check_cited.py`.
"""

import fnmatch
import os
import re
import sys

DOCS = ["BENCHMARKS.md", "RELIABILITY.md"]
RESULTS = "bench/results"


def expand(token):
    """The names a token with `{a,b}` alternatives stands for."""
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    names = []
    for alt in m.group(1).split(","):
        names += expand(token[: m.start()] + alt + token[m.end():])
    return names


def patterns(text):
    """Glob patterns for every citation in `text`."""
    found = set()
    for token in re.findall(r"[`(]([^`()\s]+)[`)]", text):
        if "results/" not in token and "…" not in token and not re.match(r"20\d\d-", token):
            continue
        for name in expand(token):
            name = name.split("results/")[-1].rstrip(".,;:")
            if not name:
                continue
            name = name.replace("…", "*")
            found.update({name, name + ".*"})
    return found


def main():
    text = "".join(open(doc, encoding="utf-8").read() for doc in DOCS)
    pats = patterns(text)
    uncited = [
        f for f in sorted(os.listdir(RESULTS)) if not any(fnmatch.fnmatch(f, p) for p in pats)
    ]
    for f in uncited:
        print(f"{RESULTS}/{f}: cited by neither {' nor '.join(DOCS)}")
    if uncited:
        print(f"{len(uncited)} results file(s) uncited: cite them, or delete them (issue 9)")
        return 1
    print(f"bench/results: all {len(os.listdir(RESULTS))} files cited")
    return 0


if __name__ == "__main__":
    sys.exit(main())
