"""Phylo-NN: phylogeny levels, the model and its training, codes, distances against the tree."""

from traitpipe.phylo.distances import js_distance_matrix, upper_spearman
from traitpipe.phylo.levels import level_distances, level_labels, rank_labels

__all__ = ["js_distance_matrix", "level_distances", "level_labels", "rank_labels", "upper_spearman"]
