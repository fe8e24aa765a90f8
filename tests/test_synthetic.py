import json
import math

import dendropy
import numpy as np
import pandas as pd
from PIL import Image

from traitpipe.collection import synthesize
from traitpipe.collection.synthetic import PARTS, _hue


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = _files(synthesize(tmp_path / "a", n_species=3, per_species=3, size=48, seed=7))
    b = _files(synthesize(tmp_path / "b", n_species=3, per_species=3, size=48, seed=7))
    c = _files(synthesize(tmp_path / "c", n_species=3, per_species=3, size=48, seed=8))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert a != c


def test_manifest_and_tree_agree(small_collection):
    manifest = pd.read_csv(small_collection / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 20 and manifest["species"].nunique() == 4
    assert set(manifest.columns) >= {"path", "species", "family", "genus", "specimen_id", "mask"}
    # exactly one labelled reference per species
    assert (manifest.groupby("species")["mask"].apply(lambda m: (m != "").sum()) == 1).all()
    tree = dendropy.Tree.get(path=str(small_collection / "phylogeny.nwk"), schema="newick")
    assert {t.taxon.label for t in tree.leaf_node_iter()} == set(manifest["species"])
    depths = [n.distance_from_root() for n in tree.leaf_node_iter()]
    assert max(depths) - min(depths) < 1e-5 and abs(depths[0] - 1) < 1e-5  # ultrametric, depth 1
    # a genus never spans two families
    assert (manifest.groupby("genus")["family"].nunique() == 1).all()


def test_truth_masks_agree_with_images(small_collection):
    manifest = pd.read_csv(small_collection / "manifest.csv", keep_default_na=False)
    species = json.loads((small_collection / "truth" / "species.json").read_text())
    parts = json.loads((small_collection / "masks" / "parts.json").read_text())
    assert {int(k): v for k, v in parts.items()} == PARTS
    for row in manifest.itertuples():
        image = np.asarray(Image.open(small_collection / row.path)).astype(float)
        labels = np.asarray(Image.open(small_collection / row.parts_truth))
        trait = np.asarray(Image.open(small_collection / row.trait_truth)) > 0
        assert image.shape == labels.shape + (3,)
        assert set(np.unique(labels)) <= set(range(8)) and (labels > 0).mean() > 0.1
        # background is light and plain; the specimen is not
        background = image[labels == 0]
        assert background.mean() > 190 and background.std(0).max() < 25
        # the trait mask sits on the marked part and shows the mark's colour (up to lighting)
        look = species[row.species]
        assert trait.sum() >= 3
        assert set(np.unique(labels[trait])) <= {"forewing": {4, 5}, "hindwing": {6, 7},
                                                   "thorax": {2}, "abdomen": {3}}[look["mark_part"]]
        seen = image[trait].mean(0)
        want = np.asarray(look["mark_colour"])
        cosine = seen @ want / (np.linalg.norm(seen) * np.linalg.norm(want))
        assert cosine > 0.95, (row.path, seen, want)
        if row.mask:
            assert np.array_equal(np.asarray(Image.open(small_collection / row.mask)), labels)


def test_every_species_has_its_own_mark(tmp_path):
    """Two species' marks differ in part, place (> 0.3) or hue (> 0.08): a person (and a map) can tell them apart."""
    root = synthesize(tmp_path / "many", n_species=16, per_species=2, size=48, seed=5)  # crowded: marks must avoid
    species = json.loads((root / "truth" / "species.json").read_text())
    marks = [(s["mark_part"], s["mark_s"], s["mark_t"], _hue(s["mark_colour"]))
             for s in species.values()]
    for i, a in enumerate(marks):
        for b in marks[i + 1:]:
            assert a[0] != b[0] or math.hypot(a[1] - b[1], a[2] - b[2]) > 0.3 or abs(a[3] - b[3]) > 0.08


def test_cryptic_sisters_differ_only_by_their_marks(tmp_path):
    from traitpipe.collection.synthetic import SpeciesLook, render_specimen

    root = synthesize(tmp_path / "c", n_species=8, per_species=2, size=64, seed=0)
    params = json.loads((root / "collection.json").read_text())
    assert params["version"] == 5 and len(params["cryptic_pairs"]) == 3  # the demo's tree: every sister pair
    looks = json.loads((root / "truth" / "species.json").read_text())
    # each species' trait part(s), as the part names of the masks: a wing mark is on both wings
    assert {name: parts for name, parts in params["trait_parts"].items()} == {
        name: {"forewing": ["left_forewing", "right_forewing"], "hindwing": ["left_hindwing", "right_hindwing"]}.get(
            look["mark_part"], [look["mark_part"]]) for name, look in looks.items()}
    concepts = json.loads((root / "concepts.json").read_text())  # each mark in words: its colour and its part
    assert sorted(concepts) == sorted(looks)
    for name, concept in concepts.items():
        assert concept.endswith(looks[name]["mark_part"] + ("s" if "wing" in looks[name]["mark_part"] else ""))
    assert concepts[params["cryptic_pairs"][1][0]] != concepts[params["cryptic_pairs"][1][1]]
    mark = {"mark_part", "mark_s", "mark_t", "mark_colour"}
    for a, b in params["cryptic_pairs"]:
        rest_a = {k: v for k, v in looks[a].items() if k not in mark | {"family", "genus"}}
        rest_b = {k: v for k, v in looks[b].items() if k not in mark | {"family", "genus"}}
        assert rest_a == rest_b and any(looks[a][k] != looks[b][k] for k in mark)
        # drawn with the same pose and lighting, the two differ only on their marks
        fields = SpeciesLook.__dataclass_fields__
        image_a, _, trait_a = render_specimen(SpeciesLook(**{k: looks[a][k] for k in fields}), 96,
                                              np.random.default_rng(5))
        image_b, _, trait_b = render_specimen(SpeciesLook(**{k: looks[b][k] for k in fields}), 96,
                                              np.random.default_rng(5))
        differ = (image_a != image_b).any(2)
        assert differ.any() and not (differ & ~(trait_a | trait_b)).any()
    plain = json.loads((synthesize(tmp_path / "p", n_species=8, per_species=2, size=64, seed=0, cryptic=0.0)
                        / "truth" / "species.json").read_text())
    a, b = params["cryptic_pairs"][0]
    assert plain[a]["body"] != plain[b]["body"]  # without the setting, sisters keep their own looks


def test_damaged_specimens_lack_their_part_or_half_of_it_and_the_truth_says_which(tmp_path):
    from traitpipe.traits.evaluation import part_condition

    root = synthesize(tmp_path / "c", n_species=3, per_species=6, size=96, seed=1, damaged=2)
    manifest = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    expected = [""] * 4 + ["left_forewing damaged", "left_forewing absent"]  # the last ones; never the reference
    assert manifest.groupby("species")["damage"].apply(list).tolist() == [expected] * 3
    area = manifest["parts_truth"].map(lambda p: int((np.array(Image.open(root / p)) == 4).sum()))
    right = manifest["parts_truth"].map(lambda p: int((np.array(Image.open(root / p)) == 5).sum()))
    hurt = manifest["damage"] != ""
    assert (area[manifest["damage"] == "left_forewing absent"] == 0).all()
    halves = area[manifest["damage"] == "left_forewing damaged"] / right[manifest["damage"] == "left_forewing damaged"]
    assert ((halves > 0.15) & (halves < 0.5)).all()  # the mirror wing is whole: about a third of it is left
    assert (area[~hurt] > 0).all() and (right[hurt] > 0).all()
    # the evaluation reads each image's condition back from the truth masks alone
    condition = part_condition(area, manifest["species"])
    assert condition.tolist() == [d.split()[-1] if d else "intact" for d in manifest["damage"]]
