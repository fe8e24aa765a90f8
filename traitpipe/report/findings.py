"""What a run found, in the README's words: every number read from the run's ``evaluation`` table.

The README's "What the demo found" lies between :data:`START` and :data:`END`; ``traitpipe findings --readme
README.md`` writes it from the demo's results, and the demo's tests check that the README says what the demo's
tables say, so a number in it cannot drift from the run.
"""

from __future__ import annotations

import math

import pandas as pd

from traitpipe.report.figures import map_name

START = "<!-- findings: written by `traitpipe findings --readme README.md` from the demo's tables; do not edit -->"
END = "<!-- end of findings -->"


class Scores:
    """Look-ups in ``evaluation`` rows: the value (and n) of one (stage, method, metric, subset, alpha, level, part).

    Parameters
    ----------
    evaluation : pandas.DataFrame
        ``evaluation`` rows with their ``stage``.
    """

    def __init__(self, evaluation: pd.DataFrame):
        self.rows = evaluation

    def row(self, metric: str, subset: str, *, method: str | None = None, stage: str | None = None,
            alpha: float | None = None, level: str | None = None, part: str | None = None) -> dict | None:
        """The one row that matches (None when none does); NaN ``alpha``/``level``/``part`` match None."""
        rows = self.rows[(self.rows["metric"] == metric) & (self.rows["subset"] == subset)]
        for column, wanted in (("method", method), ("stage", stage)):
            if wanted is not None:
                rows = rows[rows[column] == wanted]
        for column, wanted in (("alpha", alpha), ("level", level), ("part", part)):
            rows = rows[rows[column].isna()] if wanted is None else rows[rows[column] == wanted]
        return rows.iloc[0].to_dict() if len(rows) else None

    def value(self, metric: str, subset: str, **keys) -> float:
        """The value of :meth:`row`, NaN when there is none."""
        row = self.row(metric, subset, **keys)
        return float("nan") if row is None or row["value"] is None or pd.isna(row["value"]) else float(row["value"])


def _pct(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}%}"


def _num(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def map_table(scores: Scores) -> list[str]:
    """One Markdown table row per map (method and alpha) scored against the planted mark: trait energy and
    pointing on all images and on the cryptic pairs, and RD@0.05 on the cryptic pairs (over the images every
    map ranks); the blind map's energy first."""
    rows = scores.rows[(scores.rows["stage"] == "evaluate") & (scores.rows["metric"] == "trait_energy")]
    keys = rows[["method", "alpha"]].drop_duplicates()
    keys = keys.assign(blind=keys["method"] != "uniform").sort_values(["blind", "method", "alpha"],
                                                                      na_position="first")
    lines = ["| map | mass on the mark | cryptic pairs | peak on the mark | cryptic pairs | RD@0.05, cryptic |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method, alpha in zip(keys["method"], keys["alpha"]):
        alpha = None if pd.isna(alpha) else float(alpha)
        get = lambda metric, subset: scores.value(metric, subset, stage="evaluate", method=method, alpha=alpha)  # noqa: E731
        name = "a blind map (`uniform`)" if method == "uniform" else map_name(method, alpha)
        lines.append(f"| {name} | {_pct(get('trait_energy', 'all'), 2)} | {_pct(get('trait_energy', 'cryptic'), 2)} "
                     f"| {_pct(get('trait_pointing', 'all'), 1)} | {_pct(get('trait_pointing', 'cryptic'), 1)} "
                     f"| {_num(get('relative_drop@0.05', 'cryptic'), 3)} |")
    return [line.replace("| n/a |", "| - |") for line in lines]


def findings(evaluation: pd.DataFrame) -> str:
    """The README's findings, from a run's ``evaluation`` rows (with ``stage``).

    Parameters
    ----------
    evaluation : pandas.DataFrame

    Returns
    -------
    str
        Markdown between :data:`START` and :data:`END` (both included), ending in a newline.
    """
    s = Scores(evaluation)
    sst = {subset: s.row("miou", subset, stage="evaluate", method="sst") for subset in ("held_out", "trained",
                                                                                        "queries")}
    tuned = {when: s.row(f"miou_{when}", "held_out", stage="sst_finetune") for when in ("untuned", "tuned")}
    auc = s.row("retrieval_auc", "queries", stage="evaluate", method="sst") or {}
    part = auc.get("part")
    trip = {c: s.value(f"round_trip_iou_{c}", "queries", stage="evaluate", part=part)
            for c in ("absent", "damaged", "intact")}
    accuracy = {method: s.row("top1_accuracy", "val", method=method) for method in
                ("classifier", "promptcam", "intr")}
    zero_shot = evaluation[(evaluation["metric"] == "zero_shot_accuracy") & (evaluation["subset"] == "all")]
    phylo = evaluation[evaluation["metric"] == "spearman_phylo_codes_vs_tree"]["value"].astype(float)
    nonphylo = s.value("spearman_nonphylo_codes_vs_tree", "held_out", stage="phylonn", level="3")

    def n(row):
        return "?" if row is None else int(row["n"])

    def val(row, digits=2):
        return "n/a" if row is None or pd.isna(row["value"]) else f"{row['value']:.{digits}f}"

    def share(row):
        return "n/a" if row is None or pd.isna(row["value"]) else f"{row['value']:.0%}"

    lines = [START, ""]
    lines.append(f"- SST (a small SAM 2 trained here, two species held out): each part's mask overlaps the true "
                 f"part with mIoU {val(sst['held_out'])} on the species it never saw ({n(sst['held_out'])} images) "
                 f"and {val(sst['trained'])} on those it trained on ({val(sst['queries'])} over all "
                 f"{n(sst['queries'])} query images). One-shot fine-tuning of the memory attention, scored on the "
                 f"held-out species' queries it never saw ({n(tuned['tuned'])} images): mIoU "
                 f"{val(tuned['untuned'], 3)} before, {val(tuned['tuned'], 3)} after.")
    if part is not None:
        lines.append(f"- Trait retrieval: ranked by SST's round-trip IoU of the {part}, a specimen with it intact "
                     f"comes before one where it is absent or torn {share(auc)} of the time (`retrieval_auc` "
                     f"{val(auc, 3)}); the mean round-trip IoU is {_num(trip['absent'], 3)} where it is absent, "
                     f"{_num(trip['damaged'])} where torn, {_num(trip['intact'])} where intact.")
    names = {"classifier": "The classifier the CAMs explain", "promptcam": "Prompt-CAM's class prompts",
             "intr": "INTR"}
    said = [f"{names[m]} {share(r)} ({n(r)} images)" for m, r in accuracy.items() if r is not None]
    if said:
        lines.append("- Held-out specimens classified right: " + "; ".join(said) + ".")
    if len(zero_shot):
        said = [f"{row.method} {row.value:.0%}" for row in zero_shot.sort_values("method").itertuples()]
        lines.append("- CLIP, zero-shot: the image's own prompt is the most similar one for " + ", ".join(said)
                     + " of the images.")
    if len(phylo):
        lines.append(f"- Phylo-NN on held-out specimens: species distances in the phylogenetic codes follow the "
                     f"tree's with Spearman {phylo.min():.2f} to {phylo.max():.2f} over the levels; the "
                     f"non-phylogenetic codes' {_num(nonphylo)}.")
    lines += ["", "Each map against the mark the collection plants (mass: the mean share of a map's mass on the "
              "mark; peak: the share of images whose map peaks on it; RD@0.05: the relative confidence drop "
              "when the map's top 5% pixels are hidden, compared over the images every map ranks, each map "
              "against its own model):", ""]
    lines += map_table(s)
    lines += ["", END]
    return "\n".join(lines) + "\n"


def replace_findings(text: str, block: str) -> str:
    """``text`` (a README) with its findings block replaced by ``block``.

    Raises
    ------
    ValueError
        When ``text`` has no block between :data:`START` and :data:`END`.

    Examples
    --------
    >>> replace_findings(f"a\\n{START}\\nold\\n{END}\\nb\\n", f"{START}\\nnew\\n{END}\\n")
    '''a\\n<!-- findings: written by `traitpipe findings --readme README.md` from the demo's tables; do not edit -->\\nnew\\n<!-- end of findings -->\\nb\\n'''
    """
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no findings block (from {START!r} to {END!r})")
    return text[:start] + block + text[end + len(END) + 1:]


def findings_in(text: str) -> str:
    """The findings block of ``text`` (a README), markers included, ending in a newline; '' when it has none."""
    start, end = text.find(START), text.find(END)
    return text[start:end + len(END)] + "\n" if 0 <= start < end else ""
