#!/usr/bin/env python3
"""Self instructions per task of the functions matching a pattern, by source line (inlined
code counted at its own file and line), from a callgrind profile: where a large function's
own cost goes.

    python3 bench/cg_lines.py cg.out 'slot::Slot<J> as core::future::future::Future>::poll' 100000 40

Arguments: the profile, a regular expression on function names, the number of tasks, and
how many lines to print (default 40).
"""
import collections
import re
import sys
# self cost by (file,line) for functions matching argv[2]
names={}; files={}
def nm(tab,s):
    m=re.match(r'\((\d+)\)(?: (.*))?$',s)
    if not m: return s
    i,n=m.groups()
    if n: tab[i]=n
    return tab.get(i,i)
fn=None; curfile=None; fnfile=None; pending=0; line=0
cost=collections.Counter()
pat=re.compile(sys.argv[2])
for raw in open(sys.argv[1]):
    raw=raw.rstrip('\n')
    if raw.startswith('fl='): fnfile=curfile=nm(files,raw[3:]); continue
    if raw.startswith(('fi=','fe=')): curfile=nm(files,raw[3:]); continue
    if raw.startswith('fn='): fn=nm(names,raw[3:]); curfile=fnfile; continue
    if raw.startswith(('cfn=','cfi=','cfl=','cob=','ob=')):
        if raw.startswith(('cfi=','cfl=')): nm(files,raw[4:])
        if raw.startswith('cfn='): nm(names,raw[4:])
        continue
    if raw.startswith('calls='): pending=1; 
    if raw.startswith('calls='):
        continue
    if raw and (raw[0].isdigit() or raw[0] in '+-*'):
        parts=raw.split()
        p=parts[0]
        if p.startswith('+'): line+=int(p[1:])
        elif p.startswith('-'): line-=int(p[1:])
        elif p=='*': pass
        else: line=int(p)
        if pending: pending=0; continue
        if fn and pat.search(fn) and len(parts)>=2:
            cost[(curfile,line)]+=int(parts[-1])
n=int(sys.argv[3])
srcs={}
for (f,l),c in cost.most_common(int(sys.argv[4]) if len(sys.argv)>4 else 40):
    try:
        if f not in srcs: srcs[f]=open(f).read().split('\n')
        text=srcs[f][l-1].strip()[:90]
    except Exception: text='?'
    print("%6.1f  %s:%d  %s"%(c/n, f.split('/')[-1] if f else f, l, text))
