#!/usr/bin/env python3
"""Atomic read-modify-writes executed per task, from a callgrind profile made with
`--dump-instr=yes`: the executions of every `lock`-prefixed or memory-`xchg` instruction
(x86-64), found with `objdump -d` in each object of the profile. Deterministic, like the
instruction counts of `instructions.sh`; an uncontended one costs about 5 ns on this
machine (`bench/instructions.sh` says how that was measured), a contended one far more.

    python3 bench/atomics.py PROFILE TASKS [--by-function]
"""
import collections
import re
import subprocess
import sys


def parse(path):
    """Exclusive executions per (object, address), and the function of each address."""
    obnames, fnnames = {}, {}
    counts = collections.Counter()
    fn_at = {}
    ob = fn = None
    addr = line = 0
    call_cost_next = False

    def pos(tok, last):
        if tok == "*":
            return last
        if tok[0] in "+-":
            return last + int(tok, 0)
        return int(tok, 0)

    for raw in open(path):
        raw = raw.rstrip("\n")
        if not raw:
            continue
        m = re.match(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", raw)
        if m:
            kind, ident, name = m.groups()
            names = obnames if kind.endswith("ob") else fnnames
            if name:
                names[ident] = name
            if kind == "ob":
                ob = ident
            elif kind == "fn":
                fn = ident
            continue
        if raw.startswith("calls="):
            # The next cost line is the call's inclusive cost, at the call site.
            call_cost_next = True
            continue
        if raw[0] in "0123456789+-*":
            parts = raw.split()
            addr = pos(parts[0], addr)
            if len(parts) > 2:
                line = pos(parts[1], line)
            if call_cost_next:
                call_cost_next = False
                continue
            counts[(ob, addr)] += int(parts[-1])
            fn_at[(ob, addr)] = fn
    return obnames, fnnames, counts, fn_at


def atomic_addresses(obj):
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True
    ).stdout
    found = set()
    for l in out.split("\n"):
        # `lock`-prefixed instructions, and `xchg` with a memory operand (always locked).
        if re.match(r"^\s+[0-9a-f]+:\s+(lock |xchg\s+%\w+,[-0-9a-fx]*\()", l):
            found.add(int(l.split(":")[0], 16))
    return found


def main():
    path, tasks = sys.argv[1], int(sys.argv[2])
    by_function = "--by-function" in sys.argv[3:]
    obnames, fnnames, counts, fn_at = parse(path)
    total = 0
    per_fn = collections.Counter()
    for ob, name in obnames.items():
        if not name.startswith("/"):
            continue
        addrs = atomic_addresses(name)
        for (o, a), c in counts.items():
            if o == ob and a in addrs:
                total += c
                per_fn[fnnames.get(fn_at[(o, a)], "?")] += c
    print(f"{total / tasks:.1f}")
    if by_function:
        for f, c in per_fn.most_common():
            if c / tasks >= 0.05:
                print(f"  {c / tasks:6.2f}  {f[:150]}")


if __name__ == "__main__":
    main()
