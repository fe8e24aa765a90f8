"""Phylogeny levels: which group each species belongs to at each level of the tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dendropy
import numpy as np

#: Relative distances from the root of the three ancestor levels (level 3 is the species).
DISTANCES = (0.33, 0.5, 0.77)


def read_tree(newick: str | Path) -> dendropy.Tree:
    """A tree from a Newick file path or Newick text (underscores in names are kept)."""
    text = Path(newick).read_text() if Path(str(newick)).is_file() else str(newick)
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


def level_labels(newick: str | Path, species: Sequence[str], distances: Sequence[float] = DISTANCES) -> np.ndarray:
    """Group of every species at every level of an ultrametric tree.

    Parameters
    ----------
    newick : str or Path
        Newick file or text, with branch lengths.
    species : sequence of str, length S
        Tip names.
    distances : sequence of float
        Relative distances from the root of the ancestor levels; a species'
        group at level k is the clade below the point reached at ``distances[k]``
        of the root-to-tip depth on its root-to-tip path.

    Returns
    -------
    numpy.ndarray, int64, shape (S, len(distances) + 1)
        Group index per species and level (numbered in order of first appearance);
        the last level is the species itself.

    Raises
    ------
    ValueError
        Duplicate tip names, species missing from the tree, or a tree that is not ultrametric.
    """
    tips, depth = _tips(read_tree(newick), species)
    out = np.zeros((len(species), len(distances) + 1), np.int64)
    for level, fraction in enumerate(distances):
        cut = fraction * depth
        groups: dict[int, int] = {}
        for i, name in enumerate(species):
            node = tips[name]
            while node.parent_node is not None and node.parent_node.distance_from_root() >= cut - 1e-12:
                node = node.parent_node
            out[i, level] = groups.setdefault(id(node), len(groups))
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


def level_distances(newick: str | Path, species: Sequence[str],
                    distances: Sequence[float] = DISTANCES) -> np.ndarray:
    """Tree distance between the ancestors of every species pair at every level.

    At level k both species are followed from the root to the point at
    ``distances[k]`` of the depth; the distance between those points is
    ``2 * max(0, d_k * D - depth(mrca))``. The last level (d = 1) is the patristic distance.

    Returns
    -------
    numpy.ndarray, float64, shape (len(distances) + 1, S, S)
    """
    tree = read_tree(newick)
    tips, depth = _tips(tree, species)
    n = len(species)
    mrca_depth = np.zeros((n, n))
    paths = []
    for name in species:
        path, node = [], tips[name]
        while node is not None:
            path.append(node)
            node = node.parent_node
        paths.append({id(p): p.distance_from_root() for p in path})
    for i in range(n):
        for j in range(i + 1, n):
            common = paths[i].keys() & paths[j].keys()
            mrca_depth[i, j] = mrca_depth[j, i] = max(paths[i][c] for c in common)
    np.fill_diagonal(mrca_depth, depth)
    levels = [*distances, 1.0]
    return np.stack([2 * np.clip(d * depth - mrca_depth, 0, None) for d in levels])
