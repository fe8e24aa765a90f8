"""Write ``js_reference.npz``: the Phylo-NN authors' own code computing species' JS distance matrices from codes,
for tests/test_phylo_levels.py.

Usage: python tests/data/phylonn/make_js_reference.py PATH_TO_PHYLONN_CHECKOUT

PATH_TO_PHYLONN_CHECKOUT is a copy of github.com/elhamod/phylonn (read at commit db97771). Nothing of their code
is stored here: ``js_divergence``, ``HistogramParser`` and ``Embedding_Code_converter`` are read from their
``scripts/analysis_utils.py`` when this script runs (the module's own imports pull in their training code, so
the three definitions are taken out of it), and driven as their ``analysis/generate_histograms_matrix.py``
``main`` drives them: per species and code location, a histogram of the codes (``torch.histc``, normalised),
scipy's Jensen-Shannon distance per location, averaged over the non-phylo codes, over the phylo codes of
levels 0..i, and over all phylo codes.

The codes are random but skewed per species (so histograms overlap partly), in the authors' fish layout: 8
codes per level, 4 levels (phylo code k = 4 * position + level), 16 x 8 non-phylo codes, a 64-code book.
"""

import ast
import sys
import types
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import distance as js_distance

SIZES = {"n_embed": 64, "codes_per_level": 8, "levels": 4, "nonphylo": 16 * 8, "species": 5, "images": 120}


def _definitions(path: Path, names: set[str]) -> str:
    """The source of some top-level functions and classes of a module, without running the module."""
    tree = ast.parse(path.read_text())
    chosen = [node for node in tree.body if getattr(node, "name", None) in names]
    assert {node.name for node in chosen} == names, f"not all of {names} found in {path}"
    return ast.unparse(ast.Module(body=chosen, type_ignores=[]))


def main() -> None:
    checkout = Path(sys.argv[1])
    space = {"torch": torch, "js_distance": js_distance}
    exec(_definitions(checkout / "scripts" / "analysis_utils.py",
                      {"js_divergence", "HistogramParser", "Embedding_Code_converter"}), space)
    s = SIZES
    rng = np.random.default_rng(0)
    species = rng.integers(0, s["species"], s["images"])
    phylo_width = s["codes_per_level"] * s["levels"]
    phylo = (rng.integers(0, 6, (s["images"], phylo_width)) + 3 * species[:, None]) % s["n_embed"]
    nonphylo = (rng.integers(0, 9, (s["images"], s["nonphylo"])) + 2 * species[:, None]) % s["n_embed"]

    model = types.SimpleNamespace(phylo_disentangler=types.SimpleNamespace(
        n_embed=s["n_embed"], n_phylolevels=s["levels"], codes_per_phylolevel=s["codes_per_level"],
        n_levels_non_attribute=s["nonphylo"] // s["codes_per_level"]))
    parser = space["HistogramParser"](model)
    converter = space["Embedding_Code_converter"](None, None, (1, 16, s["codes_per_level"], s["levels"]))
    # their hist_arr[species][location]: the codes of that species' images at that location (code_histogram.py)
    hist = [[phylo[species == k, p].tolist() for p in range(phylo_width)] for k in range(s["species"])]
    hist_nonattr = [[nonphylo[species == k, p].tolist() for p in range(s["nonphylo"])] for k in range(s["species"])]
    js = torch.zeros([s["species"], s["species"], s["levels"] + 1])  # as generate_histograms_matrix.main
    for a in range(s["species"]):
        for b in range(a, s["species"]):
            attr, _, _ = parser.get_distances(hist, a, b)
            nonattr, _, _ = parser.get_distances(hist_nonattr, a, b)
            js[a, b, 0] = js[b, a, 0] = torch.mean(nonattr)
            for i in range(s["levels"] - 1):
                js[a, b, i + 1] = js[b, a, i + 1] = torch.mean(converter.get_sub_level(attr.unsqueeze(0), i))
            js[a, b, -1] = js[b, a, -1] = torch.mean(attr)
    np.savez_compressed(Path(__file__).with_name("js_reference.npz"), species=species, phylo=phylo,
                        nonphylo=nonphylo, js=js.numpy(), levels=s["levels"], codes_per_level=s["codes_per_level"],
                        n_embed=s["n_embed"])


if __name__ == "__main__":
    main()
