"""What a run found, in words: every number read from the run's ``evaluation`` table.

``docs/findings.md`` ("What the demo found") holds a block between :data:`START` and :data:`END`;
``traitpipe findings --write docs/findings.md`` writes it from the demo's results, and the demo's tests check that
the file says what the demo's tables say, so a number in it cannot drift from the run.
"""

from __future__ import annotations

import math
import textwrap

import pandas as pd

from traitpipe.report.figures import map_name

START = "<!-- findings: written by `traitpipe findings --write docs/findings.md` from the demo's tables; do not edit -->"
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

    def row(self, metric: str, subset: str, **keys) -> dict | None:
        """The first row of ``metric`` and ``subset`` whose columns equal ``keys`` (e.g. ``stage``, ``method``,
        ``alpha``, ``level``, ``part``; a key given as None matches a null), None when none does."""
        rows = self.rows[(self.rows["metric"] == metric) & (self.rows["subset"] == subset)]
        for column, wanted in keys.items():
            rows = rows[rows[column].isna()] if wanted is None else rows[rows[column] == wanted]
        return rows.iloc[0].to_dict() if len(rows) else None

    def value(self, metric: str, subset: str, **keys) -> float:
        """The value of :meth:`row`, NaN when there is none."""
        return value_of(self.row(metric, subset, **keys))


def value_of(row: dict | None) -> float:
    """An ``evaluation`` row's value, NaN for no row or a null value."""
    return float("nan") if row is None or row["value"] is None or pd.isna(row["value"]) else float(row["value"])


def _pct(value: float, digits: int = 0, missing: str = "n/a") -> str:
    return missing if math.isnan(value) else f"{value:.{digits}%}"


def _num(value: float, digits: int = 2, missing: str = "n/a") -> str:
    return missing if math.isnan(value) else f"{value:.{digits}f}"


def _species(row: dict | None) -> str:
    """'k of n' species of a ``trait_part`` row, '-' for none."""
    value = value_of(row)
    return "-" if math.isnan(value) else f"{round(value * row['n'])} of {int(row['n'])}"


def map_table(scores: Scores) -> list[str]:
    """One Markdown table row per map (method and alpha) scored against the planted mark: trait energy and
    pointing on all images and on the cryptic pairs, the species whose named part is the mark's (INTR's heads
    aside), and RD@0.05 on the cryptic pairs (over the images every
    map ranks); the blind map's energy first."""
    rows = scores.rows[(scores.rows["stage"] == "evaluate") & (scores.rows["metric"] == "trait_energy")]
    keys = rows[["method", "alpha"]].drop_duplicates()
    keys = keys.assign(blind=keys["method"] != "uniform").sort_values(["blind", "method", "alpha"],
                                                                      na_position="first")
    lines = ["| map | mass on the mark | cryptic pairs | peak on the mark | cryptic pairs | part named right | "
             "cryptic pairs | RD@0.05, cryptic | agrees with interventions, cryptic |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, alpha in zip(keys["method"], keys["alpha"]):
        alpha = None if pd.isna(alpha) else float(alpha)
        cells = [_pct(scores.value(metric, subset, stage="evaluate", method=method, alpha=alpha), digits, "-")
                 for metric, digits in (("trait_energy", 2), ("trait_pointing", 1)) for subset in ("all", "cryptic")]
        cells += [_species(scores.row("trait_part", subset, stage="evaluate", method=method, alpha=alpha, level=None))
                  for subset in ("all", "cryptic")]
        cells.append(_num(scores.value("relative_drop@0.05", "cryptic", stage="evaluate", method=method,
                                       alpha=alpha), 3, "-"))
        cells.append(_num(scores.value("part_effect_spearman", "cryptic", stage="evaluate", method=method,
                                       alpha=alpha, level=None), 2, "-"))
        name = "a blind map (`uniform`)" if method == "uniform" else map_name(method, alpha)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


#: What each ``trait_part`` score compares, for a reader.
CLAIM_METRICS = (("trait_part", "part named right"), ("trait_energy", "mass on the mark"),
                 ("trait_pointing", "peak on the mark"), ("relative_drop@0.05", "RD@0.05"),
                 ("part_effect_spearman", "agreement with the interventions"))


def _score(scores: Scores, metric: str, method: str, alpha, level=None) -> str:
    """One score on the cryptic pairs, as the findings print it ('k of n' species for ``trait_part``)."""
    row = scores.row(metric, "cryptic", stage="evaluate", method=method, alpha=alpha, level=level)
    if metric == "trait_part":
        return _species(row)
    value = value_of(row)
    return _pct(value, 2 if metric == "trait_energy" else 0, "-") if metric.startswith("trait_") else _num(value, 3, "-")


def claims(scores: Scores) -> list[str]:
    """The papers' claims, measured on the cryptic pairs: whether each Finer-CAM map beats its base CAM on each
    score of :data:`CLAIM_METRICS`, whether Prompt-CAM's top-ranked head and INTR's heads point at the mark."""
    rows = scores.rows[(scores.rows["stage"] == "evaluate") & (scores.rows["subset"] == "cryptic")]
    lines = []
    finer = rows[rows["alpha"].notna()][["method", "alpha"]].drop_duplicates()
    for method, alpha in zip(finer["method"], finer["alpha"]):
        said = []
        for metric, name in CLAIM_METRICS:
            base, ours = (value_of(scores.row(metric, "cryptic", stage="evaluate", method=method, alpha=a, level=None))
                          for a in (None, float(alpha)))
            if math.isnan(base) or math.isnan(ours):
                continue
            shown = _score(scores, metric, method, None), _score(scores, metric, method, float(alpha))
            verdict = "the same" if shown[0] == shown[1] else "better" if ours > base else "worse"  # as printed
            said.append(f"{name} {shown[0]} -> {shown[1]} ({verdict})")
        if said:
            lines.append(f"- {map_name(method, alpha)} against {method}, on the cryptic pairs: " + "; ".join(said) + ".")
    if (rows["method"] == "promptcam").any():
        lines.append("- Prompt-CAM's top-ranked head on the cryptic pairs: its peak is on the mark in "
                     f"{_score(scores, 'trait_pointing', 'promptcam', None)} of the images it ranks, "
                     f"{_score(scores, 'trait_energy', 'promptcam', None)} of its mass, and it names the mark's part "
                     f"for {_score(scores, 'trait_part', 'promptcam', None)} species.")
    heads = rows[(rows["method"] == "intr") & (rows["metric"] == "trait_part") & rows["level"].notna()]
    if len(heads):
        best = heads.sort_values(["value", "level"], ascending=[False, True]).iloc[0]
        lines.append(f"- INTR's heads on the cryptic pairs: the best, {best['level']}, names the mark's part for "
                     f"{_species(best.to_dict())} species; all heads together put "
                     f"{_score(scores, 'trait_energy', 'intr', None)} of their mass on the mark.")
    return lines


def findings(evaluation: pd.DataFrame) -> str:
    """A run's findings, from its ``evaluation`` rows (with ``stage``).

    Parameters
    ----------
    evaluation : pandas.DataFrame

    Returns
    -------
    str
        Markdown between :data:`START` and :data:`END` (both included), ending in a newline.
    """
    s = Scores(evaluation)

    def n(row: dict | None) -> str:
        return "?" if row is None else str(int(row["n"]))

    sst = {subset: s.row("miou", subset, stage="evaluate", method="sst") for subset in ("held_out", "trained",
                                                                                        "queries")}
    tuned = {when: s.row(f"miou_{when}", "held_out", stage="sst_finetune") for when in ("untuned", "tuned")}
    lines = [START, "",
             f"- SST (a small SAM 2 trained here, some species held out): each part's mask overlaps the true part "
             f"with mIoU {_num(value_of(sst['held_out']))} on the species it never saw ({n(sst['held_out'])} images) "
             f"and {_num(value_of(sst['trained']))} on those it trained on ({_num(value_of(sst['queries']))} over all "
             f"{n(sst['queries'])} query images). One-shot fine-tuning, scored on the held-out species' queries "
             f"it never saw ({n(tuned['tuned'])} images): mIoU {_num(value_of(tuned['untuned']), 3)} before, "
             f"{_num(value_of(tuned['tuned']), 3)} after."]
    auc = s.row("retrieval_auc", "queries", stage="evaluate", method="sst")
    if auc is not None:
        trip = {c: s.value(f"round_trip_iou_{c}", "queries", stage="evaluate", part=auc["part"])
                for c in ("absent", "damaged", "intact")}
        lines.append(f"- Trait retrieval: ranked by SST's round-trip IoU of the {auc['part']}, a specimen with it "
                     f"intact comes before one where it is absent or torn {_pct(value_of(auc))} of the time "
                     f"(`retrieval_auc` {_num(value_of(auc), 3)}); the mean round-trip IoU is "
                     f"{_num(trip['absent'], 3)} where it is absent, {_num(trip['damaged'])} where torn, "
                     f"{_num(trip['intact'])} where intact.")
    names = {"classifier": "the classifier the CAMs explain", "promptcam": "Prompt-CAM's class prompts",
             "intr": "INTR", "clip-species": "the CLIP's species prompts, zero-shot",
             "clip-concept": "its concept prompts, zero-shot"}
    accuracy = {name: s.row("top1_accuracy", "val", method=method) for method, name in names.items()}
    said = [f"{name} {_pct(value_of(row))} ({n(row)} images)" for name, row in accuracy.items() if row is not None]
    if said:
        lines.append("- Held-out specimens classified right: " + "; ".join(said) + ".")
    pairs = evaluation[evaluation["metric"] == "pair_accuracy"]
    if len(pairs):
        order = list(dict.fromkeys(pairs["subset"]))
        said = [f"{name} " + ", ".join(_pct(s.value("pair_accuracy", pair, method=method)) for pair in order)
                for method, name in names.items() if (pairs["method"] == method).any()]
        lines.append(f"- The same on each cryptic pair ({'; '.join(order)}): " + "; ".join(said) + ".")
    effects = evaluation[(evaluation["metric"] == "trait_part") & evaluation["method"].str.startswith(
        "interventions-") & (evaluation["subset"] == "all")]
    if len(effects):
        said = [f"{method.removeprefix('interventions-')} {_species(s.row('trait_part', 'all', method=method))} "
                f"({_species(s.row('trait_part', 'cryptic', method=method))} cryptic)" for method in effects["method"]]
        lines.append("- The part each model's own interventions name for a species (removed, it lowers the margin to "
                     "the closest species most), right for: " + "; ".join(said) + " species.")
    lines += claims(s)
    phylo = evaluation[evaluation["metric"] == "spearman_phylo_codes_vs_tree"]
    nonphylo = evaluation[evaluation["metric"] == "spearman_nonphylo_codes_vs_tree"]
    if len(phylo):
        values = phylo["value"].astype(float)
        subsets = ", ".join(sorted({{"held_out": "held-out", "train": "training"}.get(x, x) for x in phylo["subset"]}))
        lines.append(f"- Phylo-NN ({subsets} specimens): species distances in the "
                     f"phylogenetic codes follow the tree's with Spearman {values.min():.2f} to {values.max():.2f} "
                     f"over the levels; in the non-phylogenetic codes, "
                     f"{_num(float(nonphylo['value'].iloc[0]) if len(nonphylo) else float('nan'))}.")
    lines = [START, ""] + [textwrap.fill(line, 110, subsequent_indent="  ") for line in lines[2:]]
    lines += ["", textwrap.fill("Each map against the mark the collection plants (mass: the mean share of a map's "
                                "mass on the mark; peak: the share of images whose map peaks on it; part named "
                                "right: the species whose maps name the part their mark is on; RD@0.05: the "
                                "relative confidence drop when the map's top 5% pixels are hidden, compared over the "
                                "images every map ranks, each map against its own model; agrees with interventions: "
                                "the Spearman correlation, per image, of the map's mass per part with the drop of the "
                                "model's logit when that part is removed):", 110), ""]
    lines += map_table(s)
    lines += ["", END]
    return "\n".join(lines) + "\n"


def replace_findings(text: str, block: str) -> str:
    """``text`` (a Markdown file) with its findings block replaced by ``block``.

    Raises
    ------
    ValueError
        When ``text`` has no block between :data:`START` and :data:`END`.

    Examples
    --------
    >>> replace_findings(f"a\\n{START}\\nold\\n{END}\\nb\\n", f"{START}\\nnew\\n{END}\\n").split("\\n")[::2]
    ['a', 'new', 'b']
    """
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no findings block (from {START!r} to {END!r})")
    return text[:start] + block + text[end + len(END) + 1:]


def findings_in(text: str) -> str:
    """The findings block of ``text`` (a Markdown file), markers included, ending in a newline; '' when it has none."""
    start, end = text.find(START), text.find(END)
    return text[start:end + len(END)] + "\n" if 0 <= start < end else ""
