"""Phylogeny levels: which group each species belongs to at each level of the tree."""

from __future__ import annotations

from collections.abc import Sequence

import dendropy
import numpy as np
import pandas as pd

#: Relative distances from the root of the three ancestor levels (level 3 is the species).
DISTANCES = (0.33, 0.5, 0.77)


def read_tree(newick: str) -> dendropy.Tree:
    """A tree from Newick text; underscores in names are kept.

    Raises ValueError for text that is not Newick (it must start with "("): a file name is never read as a
    one-taxon tree; the caller reads the file.
    """
    if not newick.lstrip().startswith("("):
        raise ValueError(f"not Newick text (it must start with '('): {newick[:60]!r}")
    text = newick
    try:
        return dendropy.Tree.get(data=text, schema="newick", preserve_underscores=True)
    except dendropy.dataio.newickreader.NewickReader.NewickReaderDuplicateTaxonError as error:
        names = str(error).rsplit("Duplicate taxon labels:", 1)[-1].strip()
        raise ValueError(f"the tree has duplicate tip names: {names}") from None


def _tips(tree: dendropy.Tree, species: Sequence[str]) -> tuple[dict[str, dendropy.Node], float]:
    """Leaf node of every species and the root-to-tip depth; errors name the species at fault.
    (Duplicate tip names are refused when the tree is read.)"""
    leaves = {leaf.taxon.label: leaf for leaf in tree.leaf_node_iter()}
    missing = [name for name in species if name not in leaves]
    if missing:
        raise ValueError(f"species missing from the tree: {', '.join(missing)}")
    depth = {name: leaves[name].distance_from_root() for name in species}
    deepest = max(depth.values())
    off = sorted(name for name, d in depth.items() if abs(d - deepest) > 1e-3 * deepest)
    if off:
        raise ValueError(f"the tree is not ultrametric: root-to-tip depth {deepest:.6g}, but "
                         + ", ".join(f"{name} at {depth[name]:.6g}" for name in off))
    return {name: leaves[name] for name in species}, deepest


def _group_nodes(tips: dict[str, dendropy.Node], depth: float, species: Sequence[str],
                 distances: Sequence[float]) -> list[list[dendropy.Node]]:
    """The node naming each species' group at each level, by the authors' rule.

    elhamod/phylonn (``get_parent_by_ottid`` with ``get_relative_distance_for_level``): walk up
    from the leaf, node by node, while the distance from the leaf is below ``(1 - d) * D``
    (D = root-to-tip depth); stop at the root. The node reached is the first ancestor AT OR
    ABOVE the cut at relative distance d from the root.
    """
    nodes = []
    for fraction in distances:
        climb = (1 - fraction) * depth
        level = []
        for name in species:
            node, walked = tips[name], 0.0
            while walked < climb - 1e-12 * depth and node.parent_node is not None:
                walked += node.edge_length or 0.0
                node = node.parent_node
            level.append(node)
        nodes.append(level)
    return nodes


def level_labels(newick: str, species: Sequence[str], distances: Sequence[float] = DISTANCES) -> np.ndarray:
    """Group of every species at every level of an ultrametric tree, by the authors' rule.

    Parameters
    ----------
    newick : str
        Newick text, with branch lengths.
    species : sequence of str, length S
        Tip names.
    distances : sequence of float
        Relative distances from the root of the ancestor levels. A species' group at
        level k is its first ancestor at or above the point at ``distances[k]`` of the
        root-to-tip depth (walking up from the leaf; docs/methods.md, section 5), so groups are
        coarser than the clades just below the cut.

    Returns
    -------
    numpy.ndarray, int64, shape (S, len(distances) + 1)
        Group index per species and level (numbered in order of first appearance);
        the last level is the species itself.

    Raises
    ------
    ValueError
        Duplicate tip names, species missing from the tree, or a tree that is not ultrametric.

    Examples
    --------
    >>> tree = "((A:0.3,B:0.3):0.7,((C:0.6,D:0.6):0.2,E:0.8):0.2);"
    >>> level_labels(tree, list("ABCDE"), (0.33, 0.5, 0.77)).T.tolist()
    [[0, 0, 1, 1, 1], [0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [0, 1, 2, 3, 4]]
    """
    tips, depth = _tips(read_tree(newick), species)
    out = np.zeros((len(species), len(distances) + 1), np.int64)
    for level, nodes in enumerate(_group_nodes(tips, depth, species, distances)):
        groups: dict[int, int] = {}
        out[:, level] = [groups.setdefault(id(node), len(groups)) for node in nodes]
    out[:, -1] = np.arange(len(species))
    return out


def rank_labels(ranks: np.ndarray) -> np.ndarray:
    """Levels from taxonomy ranks when there is no tree.

    Parameters
    ----------
    ranks : numpy.ndarray of str, shape (S, R)
        Rank values per species, most inclusive first (e.g. family, genus).

    Returns
    -------
    numpy.ndarray, int64, shape (S, R + 1)
        Group index per rank (order of first appearance), then the species itself.
    """
    out = np.zeros((len(ranks), ranks.shape[1] + 1), np.int64)
    for level in range(ranks.shape[1]):
        groups: dict[str, int] = {}
        out[:, level] = [groups.setdefault(value, len(groups)) for value in ranks[:, level]]
    out[:, -1] = np.arange(len(ranks))
    return out


def level_distances(newick: str, species: Sequence[str],
                    distances: Sequence[float] = DISTANCES) -> np.ndarray:
    """Tree distance between the groups of every species pair at every level.

    At level k each species is represented by its group node (:func:`level_labels`); the
    distance is the path length between the two nodes (the authors'
    ``get_distance_between_parents``), 0 within a group. The last level is the patristic
    distance between the species.

    Returns
    -------
    numpy.ndarray, float64, shape (len(distances) + 1, S, S)

    Examples
    --------
    >>> tree = "((A:0.3,B:0.3):0.7,((C:0.6,D:0.6):0.2,E:0.8):0.2);"
    >>> level_distances(tree, list("ABE"), (0.5,))[:, 0].round(3).tolist()  # A to A, B, E; A's group is the root
    [[0.0, 0.0, 0.2], [0.0, 0.6, 2.0]]
    """
    tips, depth = _tips(read_tree(newick), species)
    levels = _group_nodes(tips, depth, species, distances) + [[tips[name] for name in species]]
    out = np.zeros((len(levels), len(species), len(species)))
    for k, nodes in enumerate(levels):
        for i in range(len(species)):
            for j in range(i + 1, len(species)):
                out[k, i, j] = out[k, j, i] = _path_length(nodes[i], nodes[j])
    return out


def _path_length(a: dendropy.Node, b: dendropy.Node) -> float:
    """Sum of branch lengths on the path between two nodes of one tree."""
    up = {}
    node, length = a, 0.0
    while node is not None:
        up[id(node)] = length
        length += node.edge_length or 0.0
        node = node.parent_node
    node, length = b, 0.0
    while id(node) not in up:
        length += node.edge_length or 0.0
        node = node.parent_node
    return length + up[id(node)]


def head_name(distance: float | None) -> str:
    """The Phylo-NN authors' name of a level: "033distance" for 0.33, "class" for the species (None)."""
    return "class" if distance is None else f"{str(distance).replace('.', '')}distance"


def species_levels(species: Sequence[str], distances: Sequence[float], *, tree: str | None = None,
                   ranks: pd.DataFrame | None = None, tree_name: str = "phylogeny") -> tuple[np.ndarray, list[str], str]:
    """Group of every species at every level, from the phylogeny, else from taxonomy ranks.

    Parameters
    ----------
    species : sequence of str, length S
    distances : sequence of float
        Relative distances of the ancestor levels (used with a tree).
    tree : str or None
        Newick text.
    ranks : pandas.DataFrame or None
        Used without a tree: rank values (columns, most inclusive first) indexed by species.
    tree_name : str
        What ``source`` calls the tree (its file, say).

    Returns
    -------
    levels : numpy.ndarray, int64, shape (S, L)
        The last level is the species.
    names : list of str
        Names of the ancestor levels (:func:`head_name` of each distance, or the rank names).
    source : str
        Where the levels came from, for logs.
    """
    if tree is not None:
        return level_labels(tree, species, distances), [head_name(d) for d in distances], f"phylogeny {tree_name}"
    if ranks is None or not len(ranks.columns):
        raise ValueError("phylo needs collection.phylogeny (a Newick tree) or collection.columns.ranks (taxonomy)")
    values = ranks.loc[list(species)].to_numpy(dtype=str)
    return rank_labels(values), list(ranks.columns), f"taxonomy ranks {', '.join(ranks.columns)}"


def species_distances(species: Sequence[str], distances: Sequence[float], *, tree: str | None = None,
                      ranks: pd.DataFrame | None = None) -> np.ndarray:
    """(L, S, S) distances between the species' groups per level: from the tree (:func:`level_distances`),
    else 0 within and 1 between rank groups."""
    if tree is not None:
        return level_distances(tree, species, distances)
    labels, _, _ = species_levels(species, distances, ranks=ranks)
    return np.stack([(labels[:, k, None] != labels[None, :, k]).astype(float) for k in range(labels.shape[1])])
