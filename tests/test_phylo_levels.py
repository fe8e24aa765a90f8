import ast
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


#: The Phylo-NN authors' fish tree is not public: tests/data/phylonn/make_fish_tree.py rebuilds it from their
#: published matrices (the 36 species' topology and heights from phylo_level3.csv; 11 nodes of their larger tree,
#: whose heights phylo_level{1,2}.csv and the groups files fix). So levels 1 and 2 (groups and distances) check
#: that the rule, the node-to-node distance and the authors' per-level max normalisation together are consistent
#: with the published files; level 0 and level 3 follow from the rule alone.
FISH_TREE = (DATA / "phylonn_fish_tree.nwk").read_text()
GROUPS = [ast.literal_eval((DATA / f"species-groups-level-{k}.txt").read_text()) for k in range(3)]
SPECIES = sorted(s for group in GROUPS[0] for s in group)  # class-index order, 38 species


def _published(level):
    """The published (36, 36) matrix and the species of its rows (the header holds class indices)."""
    frame = pd.read_csv(DATA / f"phylo_level{level}.csv", index_col=0)
    return frame.to_numpy(float), [SPECIES[int(i)] for i in frame.columns]


def _partition(names, labels):
    return {frozenset(n for n, label in zip(names, labels) if label == g) for g in set(labels)}


@pytest.mark.parametrize("level", [0, 1, 2])
def test_fish_levels_are_the_authors_groups(level):
    """Level k (distances sorted: 0.33, 0.5, 0.77) is the first ancestor at or above the cut at (1 - d_k) of
    the root-to-tip depth from the leaf: the authors' species-groups-level-k.txt, Lepisosteus included, and the
    zero blocks of phylo_level{k}.csv (1.09e-06 apart: Cyprinidae and Noturus are two groups at level 1)."""
    labels = level_labels(FISH_TREE, SPECIES)
    assert _partition(SPECIES, labels[:, level]) == {frozenset(g) for g in GROUPS[level]}
    published, names = _published(level)
    blocks = {frozenset(n for n, zero in zip(names, row == 0) if zero) for row in published}
    ours = level_labels(FISH_TREE, names)
    assert _partition(names, ours[:, level]) == blocks


def test_fish_level_distances_are_the_published_matrices():
    """Node-to-node path length between the groups' nodes, divided per level by its max over the 38 test
    species (the authors' get_species_phylo_distance: ans / max), equals phylo_level{0..3}.csv to float32
    noise (published values are float32 means over specimens): no fitted scale."""
    distances = level_distances(FISH_TREE, SPECIES)
    for level in range(4):
        published, names = _published(level)
        rows = [SPECIES.index(n) for n in names]
        ours = distances[level] / distances[level].max()
        np.testing.assert_allclose(ours[np.ix_(rows, rows)], published, rtol=0, atol=2e-6,
                                   err_msg=f"phylo_level{level}.csv")


def test_levels_follow_the_authors_first_ancestor_at_or_above_the_cut():
    tree = "((A:0.3,B:0.3):0.7,((C:0.6,D:0.6):0.2,E:0.8):0.2);"
    labels = level_labels(tree, list("ABCDE"), distances=(0.33, 0.5, 0.77))
    # the authors' groups: {A,B},{C,D,E} / {A,B},{C,D},{E} / {A,B},{C,D},{E} / species; the clade just
    # below the cut would give {A,B},{C,D},{E} already at 0.33 and {A},{B},{C,D},{E} at 0.77
    assert labels.T.tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [0, 1, 2, 3, 4]]
    dist = level_distances(tree, list("ABCDE"), distances=(0.33, 0.5, 0.77))
    # node to node: A and B climb to the root (1.0 from their leaves), C, D, E to their node at 0.8 / CD at 0.6
    assert dist[0, 0, 2] == pytest.approx(0.2) and dist[0, 2, 4] == 0  # root - CDE node; same group
    assert dist[1, 2, 4] == pytest.approx(0.2) and dist[1, 0, 2] == pytest.approx(0.4)  # CD - CDE; root - CD
    assert dist[3, 0, 1] == pytest.approx(0.6) and dist[3, 0, 4] == pytest.approx(2.0)  # patristic


def test_tree_errors_name_the_species():
    with pytest.raises(ValueError, match="species missing from the tree: Z z"):
        level_labels(TREE, ["A a", "Z z"])
    with pytest.raises(ValueError, match="not ultrametric: root-to-tip depth 3, but A a at 2, B c at 2"):
        level_labels("(('A a':1,'A b':2):1,'B c':2);", ["A a", "A b", "B c"])
    with pytest.raises(ValueError, match="duplicate tip names: A a"):
        level_labels("(('A a':1,'A a':1):1,'B c':2);", ["A a", "B c"])


def test_synthetic_ranks_refine_the_tree_levels(small_collection):
    """The synthetic taxonomy cuts the tree just below each distance; the authors' level groups are the
    first ancestors at or above it, so every family (genus) lies inside one level-0 (level-1) group."""
    manifest = pd.read_csv(small_collection / "manifest.csv").drop_duplicates("species").sort_values("species")
    labels = level_labels((small_collection / "phylogeny.nwk").read_text(), manifest["species"].tolist(),
                          distances=tuple(RANK_DISTANCES.values()))
    ranks = rank_labels(manifest[["family", "genus"]].to_numpy())
    for level in range(2):
        pairs = set(zip(ranks[:, level], labels[:, level]))
        assert len(pairs) == len(set(ranks[:, level]))  # one level group per rank group
        assert len(set(labels[:, level])) <= len(set(ranks[:, level]))


def test_js_distance_bounds():
    codes = np.array([[0, 1], [0, 1], [5, 6], [5, 6]])
    d = js_distance_matrix(codes, ["x", "x", "y", "y"], n_codes=8)
    assert d[0, 0] == 0 and d[0, 1] == pytest.approx(np.sqrt(np.log(2)))
    half = js_distance_matrix(np.array([[0], [1], [0], [0]]), ["x", "x", "y", "y"], n_codes=2)
    assert 0 < half[0, 1] < np.sqrt(np.log(2))


def test_js_distances_per_level_are_the_authors():
    """Against the authors' HistogramParser and Embedding_Code_converter, driven as their
    generate_histograms_matrix.py drives them (tests/data/phylonn/make_js_reference.py): the non-phylo
    matrix, the phylo codes of levels 0..i (cumulative, phylo code k = levels * position + level), and all."""
    from traitpipe.phylo.model import level_positions

    reference = np.load(DATA / "js_reference.npz")
    levels, per_level, n_embed = int(reference["levels"]), int(reference["codes_per_level"]), int(reference["n_embed"])
    species, phylo, js = reference["species"], reference["phylo"], reference["js"]
    np.testing.assert_allclose(js_distance_matrix(reference["nonphylo"], species, n_embed), js[:, :, 0], atol=1e-6)
    for i in range(levels):  # levels 0..i; i = levels - 1 is every phylo code
        ours = js_distance_matrix(phylo[:, level_positions(levels, per_level, i).numpy()], species, n_embed)
        np.testing.assert_allclose(ours, js[:, :, i + 1], atol=1e-6)


def test_levels_from_ranks_without_a_tree():
    from traitpipe.phylo.levels import species_distances, species_levels

    ranks = pd.DataFrame({"family": ["F", "F", "G"], "genus": ["a", "b", "c"]}, index=["x", "y", "z"])
    levels, names, source = species_levels(["z", "x", "y"], (0.33, 0.5), ranks=ranks)
    assert levels.tolist() == [[0, 0, 0], [1, 1, 1], [1, 2, 2]] and names == ["family", "genus"]
    assert source == "taxonomy ranks family, genus"
    distances = species_distances(["z", "x", "y"], (0.33, 0.5), ranks=ranks)
    assert distances[0].tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]  # x and y share the family
    with pytest.raises(ValueError, match="needs collection.phylogeny .* or collection.columns.ranks"):
        species_levels(["x"], (0.5,))


def test_a_file_name_is_not_read_as_newick_text():
    from traitpipe.phylo.levels import read_tree

    with pytest.raises(ValueError, match="not Newick text .*'tree.nwk'"):
        read_tree("tree.nwk")  # a path as a string, once read as a one-taxon tree named "tree.nwk"
