"""The report's words and page: a plain sentence per evaluation row, the jinja2 template rendered."""

from __future__ import annotations

import base64

import jinja2
import pandas as pd

from traitpipe.report.figures import map_name

#: DuckDB recipes shown at the end of the report (and in the README).
QUERIES = (
    "select method, alpha, metric, subset, round(avg(value), 3) as value from evaluation group by all order by all",
    "select species, method, alpha, rank, head, part, consistency from species_traits order by all",
    "select s.species, s.part, s.consistency from species_traits s where s.method = 'gradcam' and s.alpha = 1",
)


def describe(row: dict) -> str:
    """One plain sentence saying what an ``evaluation`` row means.

    Parameters
    ----------
    row : dict
        method, alpha, metric, subset, level, value, n.

    Examples
    --------
    >>> describe({"method": "gradcam", "alpha": 1.0, "metric": "trait_pointing", "subset": "cryptic",
    ...           "level": None, "value": 0.5, "n": 8})
    "Finer-gradcam (alpha 1)'s peak falls on the true trait in 50% of 8 images (cryptic)."
    """
    name, metric, value, n, subset = map_name(row["method"], row["alpha"]), row["metric"], row["value"], \
        row["n"], row["subset"]
    if value is None or pd.isna(value):
        return "Undefined here (too few species or images for this score)."
    if metric == "trait_energy" and row["method"] == "uniform":
        return (f"The true trait covers {value:.1%} of an image ({n} images, {subset}): a map blind to it "
                f"would put that share of its mass there. Read every method's trait_energy against it.")
    if metric == "trait_energy":
        return f"{name} puts {value:.1%} of its map's mass on the true trait (mean of {n} images, {subset})."
    if metric == "trait_pointing":
        return f"{name}'s peak falls on the true trait in {value:.0%} of {n} images ({subset})."
    if metric == "trait_part":
        head = f", {row['level']}" if row["level"] else ""
        return (f"The part {name}{head} names for a species is the part its trait is on for {round(value * n)} of "
                f"{n} species ({subset}).")
    if metric == "part_effect_spearman":
        head = f" ({row['level']})" if row["level"] else ""
        return (f"{name}{head} ranks the parts as removing them lowers the explained class's logit with Spearman "
                f"{value:.2f} (mean of {n} images, {subset}; 0: no relation; the model's own evidence, no truth).")
    if metric == "part_effect_top1":
        head = f" ({row['level']})" if row["level"] else ""
        return (f"{name}{head}'s top part is the part whose removal lowers the explained class's logit most in "
                f"{value:.0%} of {n} images ({subset}).")
    if metric.startswith("relative_drop"):
        share = float(metric.split("@")[1])
        images = ("the images every map ranks" if metric.startswith("relative_drop@")
                  else "every image this map ranks (its own set: compare methods on relative_drop@ instead)")
        return (f"Masking {name}'s top {share:.0%} pixels lowers the explained class's probability by {value:+.3f} "
                f"more than its most similar class's (higher: the map holds what tells them apart; mean of {n} "
                f"images, {subset}: {images}).")
    if metric.startswith("miou"):
        when = {"miou": "", "miou_untuned": ", before one-shot fine-tuning",
                "miou_tuned": ", after one-shot fine-tuning"}.get(metric, f" ({metric})")
        return (f"SST's label maps overlap the true parts with mean IoU {value:.2f} over {n} query images "
                f"({subset}{when}).")
    if metric == "retrieval_auc":
        return (f"Ranked by SST's round-trip IoU of the {row['part']}, an image with the part intact comes before one "
                f"where it is absent or damaged {value:.0%} of the time ({n} query images, {subset}; 50%: blind).")
    if metric.startswith("round_trip_iou_"):
        return (f"Mean round-trip IoU of the {row['part']} on the {n} query images where the truth has it "
                f"{metric.removeprefix('round_trip_iou_')} ({subset}): {value:.2f}.")
    if metric == "zero_shot_accuracy":
        return (f"{row['method']}: for {value:.0%} of {n} images ({subset}) the prompt most similar to the image is "
                "its own (its species', or its species' concept), zero-shot.")
    if metric == "top1_accuracy":
        return f"{name} classifies {value:.0%} of {n} {subset} images right."
    if metric == "pair_accuracy":
        return f"{name} classifies {value:.0%} of the {n} held-out images of the cryptic pair {subset} right."
    if metric == "head_accuracy":
        return f"Phylo-NN's level-{row['level']} head names the right group for {value:.0%} of {n} {subset} images."
    if metric.startswith("spearman_"):
        kind = "phylogenetic" if "_phylo_" in metric else "non-phylogenetic"
        return (f"Distances between species' {kind} codes follow the tree's at level {row['level']} with "
                f"Spearman {value:.2f} ({n} species pairs, {subset} images).")
    return f"{metric} = {value:.3g} over {n} ({subset})."


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, so the report is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render(context: dict) -> str:
    """The report page from its context (see ``templates/report.html.j2``), HTML-escaped."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("traitpipe.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(**context)
