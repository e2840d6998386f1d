#!/usr/bin/env python3
"""Finds circles among the files of each folder of src/: file A calls (or reads) a symbol
defined in file B of the same folder, and B, directly or through others of that folder, one of
A's. Reads the symbol tables of the built objects (nm), so it sees calls, not includes.

    scripts/circles.py [build/obj]     exit 1 and the circles when there are any
"""
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

obj_root = Path(sys.argv[1] if len(sys.argv) > 1 else "build/obj")
objs = sorted(obj_root.glob("src/**/*.o"))
if not objs:
    sys.exit(f"circles: no objects under {obj_root}: run make first")

defined, used = {}, defaultdict(set)
for o in objs:
    out = subprocess.run(["nm", "--defined-only", "-g", str(o)], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            defined[parts[2]] = o
    out = subprocess.run(["nm", "-u", str(o)], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        used[o].add(line.split()[-1])

edges = defaultdict(set)
for o, syms in used.items():
    for sym in syms:
        d = defined.get(sym)
        if d is not None and d != o and d.parent == o.parent:
            edges[o].add(d)

# Tarjan's strongly connected components: every component of more than one file is a circle.
index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(comp)


for v in objs:
    if v not in index:
        visit(v)

for comp in comps:
    names = sorted(str(p.relative_to(obj_root).with_suffix(".c")) for p in comp)
    print("circle: " + " <-> ".join(names))
    for a in sorted(comp):
        for b in sorted(edges[a] & set(comp)):
            print(f"  {a.relative_to(obj_root).with_suffix('.c')} -> "
                  f"{b.relative_to(obj_root).with_suffix('.c')}")
if comps:
    sys.exit(1)
print(f"circles: none among {len(objs)} files")
