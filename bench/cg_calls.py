#!/usr/bin/env python3
"""Calls per task, self instructions per call and inclusive instructions per task of the
library's functions, from a callgrind profile: which small functions on a job's path stay
calls (and cost their entry and exit) and which are worth inlining.

    valgrind --tool=callgrind --callgrind-out-file=cg.out \
        target-bench/release/compare --child=common -n 100000 --current-thread
    python3 bench/cg_calls.py cg.out 100000

Prints functions whose name contains `nb_aiopool` and that are called at least 0.4 times
per task, by inclusive cost. Parses callgrind's name compression; `--dump-instr` is not
needed.
"""
import collections
import re
import sys
names={}
def nm(s):
    m=re.match(r'\((\d+)\)(?: (.*))?$',s)
    if not m: return s
    i,n=m.groups()
    if n: names[i]=n
    return names.get(i,i)
calls=collections.Counter(); selfc=collections.Counter(); incl=collections.Counter()
fn=None; cfn=None; pending=0
for line in open(sys.argv[1]):
    line=line.rstrip('\n')
    if line.startswith('fn='): fn=nm(line[3:]); continue
    if line.startswith('cfn='): cfn=nm(line[4:]); continue
    if line.startswith(('fl=','fi=','fe=','ob=','cob=','cfi=','cfl=')): 
        if line.startswith(('cfi=','cfl=','fi=','fe=','fl=')):
            m=re.match(r'\w+=\((\d+)\)(?: (.*))?$',line)
        continue
    if line.startswith('calls='):
        pending=int(line[6:].split()[0]); continue
    if line and (line[0].isdigit() or line[0] in '+-*'):
        parts=line.split()
        if pending:
            calls[cfn]+=pending; incl[cfn]+=int(parts[-1]); pending=0
        else:
            if len(parts)>=2: selfc[fn]+=int(parts[-1])
n=int(sys.argv[2])
rows=[]
for f,c in calls.items():
    if 'nb_aiopool' in f and c>=n*0.4:
        rows.append((c/n, selfc[f]/c if c else 0, incl[f]/n, f))
for r in sorted(rows,key=lambda r:-r[2]): print("%5.2f/job self/call %6.1f incl/job %7.1f  %s"%(r[0],r[1],r[2],r[3][:140]))
