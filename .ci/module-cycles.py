#!/usr/bin/env python3
"""Import circles between the modules of each crate.

usage: .ci/module-cycles.py CRATE_SRC_DIR...

Builds each crate's module graph from its `crate::a::b` and `super::x` paths
(a child naming its own parent, and `#[cfg(test)] mod tests` blocks, do not
count) and prints every strongly connected component of more than one
module. Exits 1 if there is one: docs/architecture.md promises none."""
import re,sys,os
def crate_cycles(root):
    mods={}
    for dp,_,fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs'): continue
            p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3]
            parts=rel.split('/')
            if parts[-1] in ('mod','lib','main'): parts=parts[:-1]
            mods['::'.join(parts)]=open(p).read()
    names=set(mods)
    def resolve(path):
        segs=path.split('::')
        for i in range(len(segs),0,-1):
            m='::'.join(segs[:i])
            if m in names: return m
        return None
    edges={m:set() for m in mods}
    for m,src in mods.items():
        src=re.sub(r'//.*','',src)
        # strip #[cfg(test)] mod tests blocks crudely: ignore lines after '#[cfg(test)]\nmod tests'
        i=src.find('#[cfg(test)]\nmod tests')
        if i>=0: src=src[:i]
        for mm in re.finditer(r'crate::((?:\w+::)*\w+)',src):
            t=resolve(mm.group(1))
            if t and t!=m and not m.startswith(t+'::') : edges[m].add(t)
        for mm in re.finditer(r'\bsuper::((?:\w+::)*\w+)',src):
            base=m.split('::')[:-1]
            t=resolve('::'.join(base+[mm.group(1)]) if base else mm.group(1))
            if t and t!=m and not m.startswith(t+'::'): edges[m].add(t)
        for mm in re.finditer(r'use crate::\{([^}]*)\}',src):
            for item in mm.group(1).split(','):
                t=resolve(item.strip().split('::')[0])
                if t and t!=m: edges[m].add(t)
    # tarjan
    idx={};low={};st=[];on=set();out=[];c=[0]
    sys.setrecursionlimit(10000)
    def sc(v):
        idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in edges[v]:
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: out.append(sorted(comp))
    for v in edges:
        if v not in idx: sc(v)
    return out

bad=0
for root in sys.argv[1:]:
    for comp in crate_cycles(root):
        print(f'{root}: import circle: {" -> ".join(comp)}')
        bad=1
sys.exit(bad)

