from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitpipe.collection.synthetic import RANK_DISTANCES
from traitpipe.phylo import js_distance_matrix, level_distances, level_labels, rank_labels, upper_spearman

DATA = Path(__file__).parent / "data" / "phylonn"
TREE = "((('A a':1,'A b':1):2,'B c':3):1,('C d':2,'C e':2):2);"


def _matrix(name):
    return pd.read_csv(DATA / f"{name}.csv", index_col=0).to_numpy()  # the row-label column dropped


@pytest.mark.parametrize("codes, truth, expected", [
    ("phylonn_js_phylo_codes_level0", "phylo_level0", 0.836),
    ("phylonn_js_phylo_codes_level1", "phylo_level1", 0.841),
    ("phylonn_js_phylo_codes_level2", "phylo_level2", 0.819),
    ("phylonn_js_phylo_codes_all", "phylo_level3", 0.747),
    ("phylonn_js_nonphylo_codes", "phylo_level3", 0.447),
    ("vq_js", "phylo_level3", 0.090),
    ("cw", "phylo_level3", 0.612),
])
def test_published_phylonn_correlations(codes, truth, expected):
    a, b = _matrix(codes), _matrix(truth)
    assert a.shape == b.shape == (36, 36)
    assert upper_spearman(a, b) == pytest.approx(expected, abs=1e-3)


def test_levels_of_a_small_tree():
    species = ["A a", "A b", "B c", "C d", "C e"]
    labels = level_labels(TREE, species, distances=(0.2, 0.5, 0.9))
    # depth 4: cut at 0.8 -> {A a, A b, B c} | {C d, C e}; at 2 -> {A a, A b} | B c | {C d, C e}
    # (the point at depth 2 is the node of C d and C e itself); at 3.6 -> tips
    assert labels[:, 0].tolist() == [0, 0, 0, 1, 1]
    assert labels[:, 1].tolist() == [0, 0, 1, 2, 2]
    assert labels[:, 2].tolist() == [0, 1, 2, 3, 4] and labels[:, 3].tolist() == [0, 1, 2, 3, 4]
    dist = level_distances(TREE, species, distances=(0.2, 0.5, 0.9))
    assert dist[3, 0, 1] == pytest.approx(2) and dist[3, 0, 3] == pytest.approx(8)  # patristic
    assert dist[0, 0, 2] == 0 and dist[0, 0, 3] == pytest.approx(1.6)  # 2 * (0.8 - 0)
    assert dist[1, 0, 1] == 0 and dist[1, 0, 2] == pytest.approx(2 * (2 - 1))


def test_tree_errors_name_the_species():
    with pytest.raises(ValueError, match="species missing from the tree: Z z"):
        level_labels(TREE, ["A a", "Z z"])
    with pytest.raises(ValueError, match="not ultrametric: root-to-tip depth 3, but A a at 2, B c at 2"):
        level_labels("(('A a':1,'A b':2):1,'B c':2);", ["A a", "A b", "B c"])
    with pytest.raises(ValueError, match="duplicate tip names: A a"):
        level_labels("(('A a':1,'A a':1):1,'B c':2);", ["A a", "B c"])


def test_synthetic_tree_levels_match_its_ranks(small_collection):
    manifest = pd.read_csv(small_collection / "manifest.csv").drop_duplicates("species").sort_values("species")
    labels = level_labels(small_collection / "phylogeny.nwk", manifest["species"].tolist(),
                          distances=tuple(RANK_DISTANCES.values()))
    ranks = rank_labels(manifest[["family", "genus"]].to_numpy())
    for level in range(2):  # same partition, whatever the numbering
        pairs = set(zip(labels[:, level], ranks[:, level]))
        assert len(pairs) == len(set(labels[:, level])) == len(set(ranks[:, level]))


def test_js_distance_bounds():
    codes = np.array([[0, 1], [0, 1], [5, 6], [5, 6]])
    d = js_distance_matrix(codes, ["x", "x", "y", "y"], n_codes=8)
    assert d[0, 0] == 0 and d[0, 1] == pytest.approx(np.sqrt(np.log(2)))
    half = js_distance_matrix(np.array([[0], [1], [0], [0]]), ["x", "x", "y", "y"], n_codes=2)
    assert 0 < half[0, 1] < np.sqrt(np.log(2))
