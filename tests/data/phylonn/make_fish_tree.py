"""Rebuild the Phylo-NN fish tree (38 species) from the authors' published matrices; writes phylonn_fish_tree.nwk.

Run from this folder (it reads phylo_level{0..3}.csv and species-groups-level-{0,1,2}.txt beside it):
    python make_fish_tree.py
The authors' tree file (their Fish/cleaned_metadata.tre) is not public. What the matrices fix:
1. phylo_level3.csv is patristic / max over the 38 test species (scripts/analysis_utils.get_species_phylo_distance
   divides by the max); the max is a Lepisosteus-teleost pair, through the root, so the root height D = 0.5 in
   these units. The 36 species' topology and node heights: UPGMA on it, edges < 1e-7 (float32 noise) collapsed.
2. The authors' tree has more nodes than these 36 + 2 tips (it is a larger tree): their walk up from a leaf
   stops at them. In phylo_level{1,2}.csv the distance of two groups is s_k (2 h(mrca) - x_g - x_h), with x_g the
   height of group g's node; least squares gives s_k and every x_g (28 and 10 equations, residual < 3e-7), and
   s_1 = 1/max_38 gives a node on the Lepisosteus stem. Each x_g strictly inside its stem (> 1e-7 from both
   ends) becomes a node with an extra tip 'x<i>' (a species of the larger tree outside the data set).
3. Not fixed by the data: the Lepisosteus crown (0.05 here; any value < 0.115 or > 0.392 fits), and the other
   nodes of the larger tree (none is needed at level 0: one published value).
"""
import ast
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import linkage, to_tree
from scipy.spatial.distance import squareform

HERE = Path(__file__).parent
D = 0.5
LEPISOSTEUS = ["Lepisosteus osseus", "Lepisosteus platostomus"]

groups = {k: ast.literal_eval((HERE / f"species-groups-level-{k}.txt").read_text()) for k in range(3)}
names38 = sorted(s for g in groups[0] for s in g)  # the class index order; the csv header holds these indices
m, names = {}, None
for k in range(4):
    frame = pd.read_csv(HERE / f"phylo_level{k}.csv", index_col=0)
    m[k] = frame.to_numpy(float)
    assert names is None or names == [names38[int(i)] for i in frame.columns]
    names = [names38[int(i)] for i in frame.columns]
L3 = (m[3] + m[3].T) / 2


class Node:
    def __init__(self, h, kids=(), name=None):
        self.h, self.kids, self.name, self.up = h, list(kids), name, None
        for kid in self.kids:
            kid.up = self


def convert(c):
    return Node(0.0, name=names[c.id]) if c.is_leaf() else Node(c.dist / 2, [convert(c.left), convert(c.right)])


def collapse(n, tol=1e-7):
    kids = []
    for kid in n.kids:
        collapse(kid, tol)
        kids += kid.kids if kid.kids and n.h - kid.h < tol else [kid]
    n.kids = kids
    for kid in kids:
        kid.up = n


def leaves(n):
    return [n] if not n.kids else [x for kid in n.kids for x in leaves(kid)]


inner = convert(to_tree(linkage(squareform(L3, checks=False), "average")))
collapse(inner)
root = Node(D, [inner, Node(0.05, [Node(0.0, name=s) for s in LEPISOSTEUS])])
tip = {leaf.name: leaf for leaf in leaves(root)}


def crown(members):
    """The smallest clade holding all members (the leaf for one)."""
    paths = []
    for s in members:
        n, path = tip[s], []
        while n:
            path.append(n)
            n = n.up
        paths.append(path)
    return next(n for n in paths[0] if all(n in p for p in paths[1:]))


extra = itertools.count()


def insert(members, h, tol=1e-7):
    """A node at height h on the stem of the members' clade, unless h is at (within tol of) either end."""
    n = crown(members)
    if h < n.h + tol:
        return False
    while n.up.h < h + tol:
        if abs(n.up.h - h) < tol:
            return False
        n = n.up
    parent = n.up
    parent.kids.remove(n)
    new = Node(h, [n, Node(0.0, name=f"x{next(extra)}")])
    new.up = parent
    parent.kids.append(new)
    return True


def fit(k):
    """Least squares s_k and group-node heights x_g from the published level-k matrix."""
    gs = [[names.index(s) for s in g if s in names] for g in groups[k]]
    gs = [g for g in gs if g]
    rows, rhs = [], []
    for a, b in itertools.combinations(range(len(gs)), 2):
        row = np.zeros(len(gs) + 1)
        row[0], row[1 + a], row[1 + b] = L3[gs[a][0], gs[b][0]], -1, -1
        rows.append(row)
        rhs.append(m[k][gs[a][0], gs[b][0]])
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    print(f"level {k}: {len(rows)} equations, scale {sol[0]:.7f}, max residual "
          f"{np.abs(np.array(rows) @ sol - rhs).max():.1e}")
    return sol[0], [([names[i] for i in g], x / sol[0]) for g, x in zip(gs, sol[1:])]


scale, nodes = {}, {}
for k in (2, 1):  # level 2 first: its nodes lie below level 1's on the same stems
    scale[k], nodes[k] = fit(k)
    cut = (1 - (0.33, 0.5, 0.77)[k]) * D
    for members, x in nodes[k]:
        assert x > cut - 1e-7, (k, members[0], x, cut)  # the authors' group node is at or above the cut
        added = insert(members, x)
        print(f"   {members[0]:24s} n={len(members):2d} node height {x:.7f} (cut {cut:.3f}) {'added' if added else ''}")
lowest = min(x for _, x in nodes[1])  # the level-1 max over 38 species: that node to the Lepisosteus group node
insert(LEPISOSTEUS, D - (1 / scale[1] - (D - lowest)))
print("Lepisosteus stem node at", D - (1 / scale[1] - (D - lowest)))


def newick(n, parent_h=None):
    length = "" if parent_h is None else f":{parent_h - n.h:.10f}"
    if not n.kids:
        return f"'{n.name}'{length}"
    return "(" + ",".join(newick(kid, n.h) for kid in n.kids) + ")" + length


if __name__ == "__main__":
    (HERE / "phylonn_fish_tree.nwk").write_text(newick(root) + ";\n")
    print(len(leaves(root)), "tips written to", HERE / "phylonn_fish_tree.nwk")
