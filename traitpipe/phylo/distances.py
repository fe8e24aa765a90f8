"""Species distances in code space and their agreement with the tree."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def js_distance_matrix(codes: np.ndarray, species: Sequence, n_codes: int = 64) -> np.ndarray:
    """Mean over code positions of the Jensen-Shannon distance between species' code histograms.

    Parameters
    ----------
    codes : numpy.ndarray of int, shape (N, P)
        Code index per image and position.
    species : sequence, length N
        Species of every image; the output follows ``sorted(set(species))``.
    n_codes : int
        Codebook size (histogram bins).

    Returns
    -------
    numpy.ndarray, float64, shape (S, S)
        Natural-log JS distance: 0 for identical histograms, sqrt(ln 2) = 0.8326 for disjoint ones.
    """
    codes = np.asarray(codes)
    species = np.asarray(species)
    names = sorted(set(species.tolist()))
    hist = np.zeros((len(names), codes.shape[1], n_codes))
    for s, name in enumerate(names):
        rows = codes[species == name]
        for p in range(codes.shape[1]):
            hist[s, p] = np.bincount(rows[:, p], minlength=n_codes)[:n_codes]
    hist /= hist.sum(-1, keepdims=True)
    a, b = hist[:, None], hist[None, :]
    mid = (a + b) / 2

    def kl(p, q):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p > 0, p * np.log(p / np.where(q > 0, q, 1)), 0.0).sum(-1)

    divergence = 0.5 * kl(a, mid) + 0.5 * kl(b, mid)
    return np.sqrt(np.clip(divergence, 0, None)).mean(-1)


def upper_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two (S, S) distance matrices over the strict upper triangle (S(S-1)/2 pairs)."""
    from scipy.stats import spearmanr  # half a second of import the steps that never call this skip

    rows, cols = np.triu_indices(len(a), k=1)
    return float(spearmanr(a[rows, cols], b[rows, cols]).statistic)
