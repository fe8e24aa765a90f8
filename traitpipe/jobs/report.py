"""The report: one self-contained HTML file (figures embedded) a person reads first, and the same figures as
PNG files for papers. Built from the run's tables and maps alone."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from traitpipe.jobs.images import load_pixels

from traitpipe.jobs.splits import cryptic_pairs, trait_parts
from traitpipe.jobs.step import Step
from traitpipe.products import MAP_KINDS, intervened_models, map_products
from traitpipe.store.cards import ModelCard
from traitpipe.phylo.levels import read_tree
from traitpipe.report.build import QUERIES, data_uri, describe, render
from traitpipe.report.figures import (Panel, display_image, evaluation_chart, map_name, png, specimen_grid,
                                     tree_figure)
from traitpipe.segment.parts import from_canvas
from traitpipe.store.atomic import atomic_path
from traitpipe.store.maps import open_maps
from traitpipe.store.tables import read_table_files
from traitpipe.traits.maps import resize_maps

RANDOM = "random weights"


def slug(name: str) -> str:
    """A file name for a species.

    Examples
    --------
    >>> slug("Arar hirta")
    'arar_hirta'
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class MapIndex:
    """Where each image's maps are: image_id -> (store, position), per product (segment, cam-<method>)."""

    def __init__(self, stores: list[str]):
        self.where: dict[str, dict[str, tuple]] = {}
        self.attrs: dict[str, dict] = {}
        for path in stores:
            group = open_maps(path)
            product = group.attrs.get("method", "segment")
            self.attrs.setdefault(product, dict(group.attrs))
            for i, image_id in enumerate(group["image_id"][:].tolist()):
                self.where.setdefault(product, {})[image_id] = (group, i)

    def products(self) -> list[str]:
        return [p for p in self.where if p != "segment"]

    def get(self, product: str, image_id: str):
        """The store and position of an image's maps, or None."""
        return self.where.get(product, {}).get(image_id)


def models_table(index: MapIndex, phylonn: str | None) -> list[dict]:
    """One row per model the run used: source, sha256 and whether its weights are random."""
    rows, seen = [], set()
    for product, attrs in index.attrs.items():
        for name, info in attrs["provenance"].get("models", {}).items():
            if name in seen:
                continue
            seen.add(name)
            random = bool(info.get("random_weights"))
            weights = RANDOM if random else info.get("origin") or "?"  # a model card's (traitpipe.store.cards)
            if name == "sam2" and not random:  # SAM 2 as its backend loaded it
                weights = info.get("checkpoint") or "?"
                if info.get("trained_here"):
                    weights = f"trained here on the collection's true part masks, not released weights ({weights})"
            rows.append({"name": name, "used_by": product, "random": random,
                         "weights": f"{weights}" + (" (recorded in provenance; the overlays say so)" if random else ""),
                         "sha256": info.get("sha256") or "-"})
    if phylonn:
        card = ModelCard.read(phylonn)
        rows.append({"name": "phylonn", "used_by": "codes", "random": card.random_weights, "weights": card.origin(),
                     "sha256": card.sha256 or "-"})
    return rows


def trait_map(trait: dict) -> str:
    """The map a ``species_traits`` row summarises, for a reader.

    Examples
    --------
    >>> trait_map({"method": "promptcam", "alpha": None, "rank": 0, "head": None})
    'promptcam top head'
    >>> trait_map({"method": "intr", "alpha": None, "rank": None, "head": 3.0})
    'intr head 3'
    """
    name = map_name(trait["method"], trait["alpha"])
    if pd.notna(trait["rank"]):
        return f"{name} top head"
    return name if pd.isna(trait["head"]) else f"{name} head {trait['head']:.0f}"


def tree_notes(traits: pd.DataFrame, truth: dict[str, list[str]],
               intervened: dict[str, str]) -> dict[str, list[tuple[str, bool | None]]]:
    """What the tree figure says after each species: the part named by each kind of evidence, whether it is
    right where the truth is known. The evidence is the first Finer-CAM map (else the first map), and the part
    interventions of the model that map explains, when the run has them.

    Parameters
    ----------
    traits : pandas.DataFrame
        ``species_traits`` rows with their ``method``.
    truth : dict of str to list of str
        Each species' trait part(s) (empty: no truth).
    intervened : dict of str to str
        Map product -> the model it explains (:func:`traitpipe.products.intervened_models`).

    Examples
    --------
    >>> traits = pd.DataFrame({"method": ["gradcam", "gradcam", "interventions-classifier"], "alpha": [None, 1.0, None],
    ...     "rank": None, "head": None, "species": "A a", "part": ["head", "thorax", "abdomen"],
    ...     "consistency": [0.5, 0.75, 1.0]})
    >>> tree_notes(traits, {"A a": ["abdomen"]}, {"gradcam": "classifier"})
    {'A a': [('Finer-gradcam (alpha 1): thorax (75%)', False), ('interventions (classifier): abdomen (100%)', True)]}
    """
    is_effect = traits["method"].str.startswith("interventions-")
    effects, maps = traits[is_effect], traits[~is_effect]
    finer = maps[maps["alpha"].notna()]
    pick = finer if len(finer) else maps[maps["rank"].isna() | (maps["rank"] == 0)]
    first = pick.sort_values(["method", "alpha", "rank", "head"], kind="stable").drop_duplicates("species")
    explained = intervened.get(first["method"].iloc[0]) if len(first) else None
    chosen = effects[effects["method"] == f"interventions-{explained}"]
    notes: dict[str, list[tuple[str, bool | None]]] = {}
    for label, rows in ((None, first), (f"interventions ({explained})", chosen)):
        for t in rows.to_dict("records"):
            right = t["part"] in truth[t["species"]] if t["species"] in truth else None
            notes.setdefault(t["species"], []).append(
                (f"{label or trait_map(t)}: {t['part']} ({t['consistency']:.0%})", right))
    return notes


def specimen_panels(image: np.ndarray, image_id: str, index: MapIndex, heads: pd.DataFrame | None,
                    n_heads: int, random: dict[str, bool], panels_of: dict[str, str]) -> list[Panel]:
    """The panels of one specimen: the image, SST's labels, and each product's maps as its kind's ``panel``
    (``panels_of``, :attr:`traitpipe.products.MapKind.panel`) says: one per comparison strength, the top-ranked
    heads (Prompt-CAM) or the first heads (INTR), ``n_heads`` of those."""
    original = image.shape[:2]
    image = display_image(image)  # labels and maps are drawn at the size the panel shows, never the photograph's
    size = image.shape[:2]
    panels = [Panel(image, title=image_id[:10])]
    found = index.get("segment", image_id)
    if found is not None:
        group, i = found
        labels = from_canvas(group["part_labels"][i], group["canvas_transform"][i], original, size)
        panels.append(Panel(image, labels=labels, title="SST parts", warning=RANDOM if random["segment"] else ""))
    for product in index.products():
        found = index.get(product, image_id)
        if found is None:
            continue
        group, i = found
        maps = resize_maps(group["cam"][i].astype(np.float32), size)
        warning = RANDOM if random[product] else ""
        if panels_of[product] == "ranked_heads":
            mine = heads[heads["image_id"] == image_id].sort_values("rank")
            shown = "rank {}" if mine["ranked"].all() else "rank {}; misclassified: the authors rank no heads"
            panels += [Panel(image, heat=maps[h], title=f"{product} head {h} ({shown.format(r)})", warning=warning)
                       for r, h in enumerate(mine["head"].tolist()[:n_heads])]
        elif panels_of[product] == "heads":
            panels += [Panel(image, heat=maps[h], title=f"{product} head {h}", warning=warning)
                       for h in range(min(n_heads, len(maps)))]
        else:
            panels += [Panel(image, heat=maps[k], title=map_name(product, alpha), warning=warning)
                       for k, alpha in enumerate(group.attrs["alphas"])]
    return panels


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job report --config RUN_CONFIG --images T.. --failures T.. --evaluation T.. --species-traits T..
    --heads T.. --maps Z.. [--phylogeny F] [--phylonn F] [--cryptic-pairs F] --report F --figures DIR``."""
    step = Step("report", argv, paths=("report", "figures"),
                lists=("images", "failures", "evaluation", "species_traits", "heads", "maps"),
                optional=("phylogeny", "phylonn", "cryptic_pairs"), compute=False)
    args, config = step.args, step.config
    images = read_table_files(args.images, "images").drop_duplicates("image_id")
    failures = read_table_files(args.failures, "failures")
    evaluation = read_table_files(args.evaluation, "evaluation")
    traits = read_table_files(args.species_traits, "species_traits")
    heads = read_table_files(args.heads, "prompt_heads") if args.heads else None
    index = MapIndex(args.maps)
    random = {product: any(m.get("random_weights") for m in attrs["provenance"].get("models", {}).values())
              for product, attrs in index.attrs.items()}
    pairs = cryptic_pairs(args.cryptic_pairs)
    sister = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    figures = Path(args.figures)
    (figures / "species").mkdir(parents=True, exist_ok=True)

    def figure(fig, name: str, dpi: int = 110) -> str:
        data = png(fig, dpi)
        with atomic_path(figures / name) as tmp:
            Path(tmp).write_bytes(data)
        return data_uri(data)

    # the evaluation, a sentence per row (per-part IoU listed apart)
    rows = []
    for row in evaluation.sort_values(["stage", "method", "metric", "subset", "level"], na_position="first").to_dict(
            "records"):
        if row["metric"].startswith("iou"):  # per part: listed apart
            continue
        row = {**row, "alpha": None if pd.isna(row["alpha"]) else row["alpha"],
               "level": None if pd.isna(row["level"]) else row["level"]}
        rows.append({"map": map_name(row["method"], row["alpha"]), "metric": row["metric"], "subset": row["subset"],
                     "level": row["level"], "n": int(row["n"]),
                     "value": "-" if pd.isna(row["value"]) else f"{row['value']:.3f}",
                     "sentence": describe(row)})
    ious = evaluation[evaluation["metric"] == "iou"]
    shown = "held_out" if (ious["subset"] == "held_out").any() else "queries"  # out of sample where it can be
    part_iou = [{"part": r["part"], "value": f"{r['value']:.2f}", "subset": shown}
                for r in ious[ious["subset"] == shown].to_dict("records")]
    scored = evaluation[evaluation["metric"].isin(["trait_energy", "trait_pointing"])
                        | evaluation["metric"].str.startswith("relative_drop@")]
    figure_uris = {"evaluation": figure(evaluation_chart(scored), "evaluation.png") if len(scored) else None}

    # per species: what its maps point at, and a grid of specimens
    settings, panels_of = config["report"], {name: MAP_KINDS[kind].panel for name, kind in map_products(config).items()}
    species = []
    for name in tqdm(sorted(images["species"].unique()), desc="report", unit="species", file=sys.stderr):
        chosen = images[images["species"] == name].sort_values("image_id").head(settings["specimens"])
        pixels, ok, _ = load_pixels(config, chosen)
        chosen = chosen[ok]
        grid = [specimen_panels(image, image_id, index, heads, settings["heads"], random, panels_of)
                for image, image_id in zip(pixels, chosen["image_id"])]
        mine = traits[(traits["species"] == name) & (traits["rank"].isna() | (traits["rank"] == 0))]
        species.append({
            "name": name, "cryptic": sister.get(name),
            "traits": [{"map": trait_map(t),
                        "part": t["part"], "consistency": f"{t['consistency']:.0%}",
                        "mass_share": "-" if pd.isna(t["mass_share"]) else f"{t['mass_share']:.1%}",
                        "area_share": f"{t['area_share']:.1%}"} for t in mine.to_dict("records")],
            "figure": figure(specimen_grid(grid, name), f"species/{slug(name)}.png", dpi=80) if grid else ""})

    if args.phylogeny and len(traits):
        notes = tree_notes(traits, trait_parts(args.cryptic_pairs), intervened_models(config))
        figure_uris["tree"] = figure(tree_figure(read_tree(Path(args.phylogeny).read_text()), notes), "tree.png")
    else:
        figure_uris["tree"] = None

    provenance = step.provenance
    warnings = [f"{m['name']} ran with random weights: its outputs (marked on every overlay) say nothing about "
                f"the specimens" for m in models_table(index, args.phylonn) if m["random"]]
    html = render({
        "run": {**{k: provenance.get(k, "?") for k in ("run_id", "traitpipe_version", "git_commit", "config_hash",
                                                        "platform")}, "device": config["device"]},
        "results": str(Path(args.report).parent), "warnings": warnings,
        "collection": {"images": len(images), "species": images["species"].nunique(), "failures": len(failures),
                       "cryptic": [f"{a} / {b}" for a, b in pairs]},
        "models": models_table(index, args.phylonn), "evaluation": rows, "part_iou": part_iou,
        "figures": figure_uris, "species": species, "queries": QUERIES, "figures_dir": str(figures)})
    with atomic_path(args.report) as tmp:
        Path(tmp).write_text(html)
    step.finish(f"{args.report}: {len(species)} species, {len(rows)} evaluation rows, {len(warnings)} warnings")
