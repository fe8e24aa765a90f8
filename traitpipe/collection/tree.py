"""Random ultrametric trees for the synthetic collection, and their Newick text.

A tree is a list of :class:`Node` in preorder; node 0 is the root. Heights are
distances from the tips (tips have height 0, the root has height 1), so every
root-to-tip path has length 1: the tree is ultrametric by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Node:
    """One node of a rooted tree.

    Attributes
    ----------
    height : float
        Distance from the tips (0 for a tip, 1 for the root).
    parent : int
        Index of the parent node, -1 for the root.
    children : list of int
        Indices of the child nodes (empty for a tip).
    tip : int
        Tip index 0..n-1 for a tip, -1 for an internal node.
    """

    height: float
    parent: int
    children: list[int] = field(default_factory=list)
    tip: int = -1


def random_ultrametric(n_tips: int, rng: np.random.Generator) -> list[Node]:
    """Draw a random binary ultrametric tree by recursive random splits.

    Parameters
    ----------
    n_tips : int
        Number of tips, >= 1.
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same tree.

    Returns
    -------
    list of Node
        Nodes in preorder; tips carry indices 0..n_tips-1 in a random order.
    """
    if n_tips < 1:
        raise ValueError(f"a tree needs at least one tip, got {n_tips}")
    tip_order = rng.permutation(n_tips)
    nodes: list[Node] = []

    def build(tips: np.ndarray, height: float, parent: int) -> int:
        index = len(nodes)
        if len(tips) == 1:
            nodes.append(Node(0.0, parent, tip=int(tips[0])))
            return index
        nodes.append(Node(height, parent))
        split = int(rng.integers(1, len(tips)))
        for part in (tips[:split], tips[split:]):
            child_height = height * rng.uniform(0.3, 0.85) if len(part) > 1 else 0.0
            nodes[index].children.append(build(part, child_height, index))
        return index

    build(tip_order, 1.0, -1)
    return nodes


def to_newick(nodes: list[Node], names: list[str]) -> str:
    """Write a tree as Newick with branch lengths and quoted tip names.

    Parameters
    ----------
    nodes : list of Node
        A tree from :func:`random_ultrametric`.
    names : list of str
        Tip names, indexed by ``Node.tip``.

    Returns
    -------
    str
        Newick text ending with ``;`` and a newline.
    """

    def write(index: int) -> str:
        node = nodes[index]
        if node.tip >= 0:
            label = "'" + names[node.tip].replace("'", "''") + "'"
        else:
            label = "(" + ",".join(write(c) for c in node.children) + ")"
        if node.parent < 0:
            return label
        return f"{label}:{nodes[node.parent].height - node.height:.6f}"

    return write(0) + ";\n"


def groups_at(nodes: list[Node], relative_distance: float) -> np.ndarray:
    """Group tips by the ancestor reached at a relative distance from the root.

    Parameters
    ----------
    nodes : list of Node
        An ultrametric tree of depth 1.
    relative_distance : float
        In [0, 1]; 0 puts every tip in one group, 1 gives one group per tip.

    Returns
    -------
    numpy.ndarray of int64, shape (n_tips,)
        Group index per tip, numbered in order of first appearance by tip index.
    """
    cut = 1.0 - relative_distance
    n_tips = sum(node.tip >= 0 for node in nodes)
    clade = np.zeros(n_tips, dtype=np.int64)
    for index, node in enumerate(nodes):
        if node.tip < 0:
            continue
        # climb while the parent is still at or below the cut height
        while nodes[index].parent >= 0 and nodes[nodes[index].parent].height <= cut:
            index = nodes[index].parent
        clade[node.tip] = index
    _, first = np.unique(clade, return_index=True)
    order = {c: i for i, c in enumerate(clade[np.sort(first)])}
    return np.array([order[c] for c in clade], dtype=np.int64)
