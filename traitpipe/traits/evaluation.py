"""Scores against known answers, as ``evaluation`` records (method, alpha, metric, subset, part, value, n).

Each function takes the per-image rows of one table and the image subsets to report (name -> species,
None = every image) and returns records; they are pure, so a test can feed the truth back as the
prediction and read the scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from traitpipe.traits.overlap import dataset_iou

#: subset name -> the species it holds (None: all images)
Subsets = Mapping[str, "set[str] | None"]


def _record(method, alpha, metric, subset, value, n, part=None) -> dict:
    alpha = None if alpha is None or pd.isna(alpha) else float(alpha)
    return {"method": method, "alpha": alpha, "metric": metric, "subset": subset, "level": None, "part": part,
            "value": None if pd.isna(value) else float(value), "n": int(n)}


def _subsets(rows: pd.DataFrame, subsets: Subsets):
    for name, species in subsets.items():
        chosen = rows if species is None else rows[rows["species"].isin(species)]
        if len(chosen):
            yield name, chosen


def segmentation_scores(part_truth: pd.DataFrame, subsets: Subsets, suffix: str = "") -> list[dict]:
    """SST against the true parts: per-part IoU (summed over images) and their mean, ``miou``.

    Only query images count: frame 0 of a pseudo-video is the species' reference, whose mask is the
    prompt. A part absent from every map and truth has no IoU and is left out of the mean.

    Parameters
    ----------
    part_truth : pandas.DataFrame
        ``part_truth`` rows (image_id, species, frame_index, part, intersection_pixels, union_pixels).
    subsets : mapping
    suffix : str
        Appended to the metric names (``miou_untuned`` and ``miou_tuned``: before and after fine-tuning).

    Examples
    --------
    >>> rows = pd.DataFrame({"image_id": ["a", "a", "b", "b"], "species": "s", "frame_index": [1, 1, 2, 2],
    ...                      "part": ["head", "tail"] * 2, "intersection_pixels": [4, 0, 4, 2],
    ...                      "union_pixels": [4, 0, 4, 4]})
    >>> [(r["metric"], r["part"], r["value"]) for r in segmentation_scores(rows, {"queries": None})]
    [('iou', 'head', 1.0), ('iou', 'tail', 0.5), ('miou', None, 0.75)]
    """
    records = []
    for name, rows in _subsets(part_truth[part_truth["frame_index"] > 0], subsets):
        n = rows["image_id"].nunique()
        ious = {part: dataset_iou(group["intersection_pixels"], group["union_pixels"])
                for part, group in rows.groupby("part", sort=False)}
        records += [_record("sst", None, f"iou{suffix}", name, iou, n, part) for part, iou in ious.items()]
        records.append(_record("sst", None, f"miou{suffix}", name, np.nanmean(list(ious.values())) if any(
            not np.isnan(v) for v in ious.values()) else np.nan, n))
    return records


#: A part covering less than this share of its species' median area (over the images that have it) is damaged.
DAMAGED_SHARE = 0.6


def part_condition(truth_pixels: pd.Series, species: pd.Series) -> pd.Series:
    """Each image's part as the truth has it: ``absent`` (no pixel), ``damaged`` (under :data:`DAMAGED_SHARE`
    of its species' median area) or ``intact``.

    Examples
    --------
    >>> part_condition(pd.Series([100, 96, 40, 0]), pd.Series(["s"] * 4)).tolist()
    ['intact', 'intact', 'damaged', 'absent']
    """
    median = truth_pixels.where(truth_pixels > 0).groupby(species).transform("median")
    return pd.Series(np.where(truth_pixels == 0, "absent", np.where(truth_pixels < DAMAGED_SHARE * median,
                                                                     "damaged", "intact")), index=truth_pixels.index)


def retrieval_scores(retrieval: pd.DataFrame, part_truth: pd.DataFrame, subsets: Subsets) -> list[dict]:
    """Does the round-trip IoU find the images that have the part? ``retrieval_auc``: the chance that an image
    whose part is intact scores above one where it is absent or damaged (ties count half; 0.5 = blind), and
    ``round_trip_iou_<condition>``: the mean score per condition (:func:`part_condition`).

    Parameters
    ----------
    retrieval : pandas.DataFrame
        ``retrieval`` rows (image_id, species, part_id, part, round_trip_iou; a part not found scores 0).
    part_truth : pandas.DataFrame
        ``part_truth`` rows (image_id, part_id, truth_pixels).
    subsets : mapping

    Examples
    --------
    >>> retrieval = pd.DataFrame({"image_id": list("abcd"), "species": "s", "part_id": 4, "part": "wing",
    ...                           "round_trip_iou": [0.9, 0.2, 0.7, 0.1]})
    >>> truth = pd.DataFrame({"image_id": list("abcd"), "part_id": 4, "truth_pixels": [50, 0, 48, 20]})
    >>> {r["metric"]: r["value"] for r in retrieval_scores(retrieval, truth, {"queries": None})}
    {'retrieval_auc': 1.0, 'round_trip_iou_absent': 0.2, 'round_trip_iou_damaged': 0.1, 'round_trip_iou_intact': 0.8}
    """
    rows = retrieval.merge(part_truth[["image_id", "part_id", "truth_pixels"]], on=["image_id", "part_id"])
    rows = rows.assign(condition=part_condition(rows["truth_pixels"], rows["species"]),
                       score=rows["round_trip_iou"].fillna(0.0))
    records = []
    for name, chosen in _subsets(rows, subsets):
        part, intact = chosen["part"].iloc[0], chosen["condition"] == "intact"
        n_in, n_out = int(intact.sum()), int((~intact).sum())
        auc = mannwhitneyu(chosen["score"][intact], chosen["score"][~intact]).statistic / (n_in * n_out) \
            if n_in and n_out else np.nan
        records.append(_record("sst", None, "retrieval_auc", name, auc, len(chosen), part))
        records += [_record("sst", None, f"round_trip_iou_{condition}", name, group["score"].mean(), len(group), part)
                    for condition, group in chosen.groupby("condition")]
    return records


def map_scores(map_truth: pd.DataFrame, subsets: Subsets) -> list[dict]:
    """Maps against the true trait: ``trait_pointing`` (share of images whose map peak lies in the trait)
    and ``trait_energy`` (mean share of the map's mass in it), per method and alpha; Prompt-CAM's
    top-ranked head only; INTR's every head (its maps sum to 1, so the mean energy is the head-mean map's). A ``uniform`` row gives the energy of a map blind to the trait (the trait's mean
    share of the image): the baseline every method's energy is read against.

    Parameters
    ----------
    map_truth : pandas.DataFrame
        ``map_truth`` rows with their ``method``.

    Examples
    --------
    >>> rows = pd.DataFrame({"method": "gradcam", "alpha": [np.nan, 1.0, np.nan, 1.0], "rank": None,
    ...                      "image_id": ["a", "a", "b", "b"], "species": "s",
    ...                      "trait_pointing": [True, True, False, True], "trait_energy": [0.5, 0.75, 0.1, 0.25],
    ...                      "trait_area": 0.25})
    >>> [(r["method"], r["alpha"], r["metric"], r["value"]) for r in map_scores(rows, {"all": None})]  # doctest: +NORMALIZE_WHITESPACE
    [('gradcam', 1.0, 'trait_pointing', 1.0), ('gradcam', 1.0, 'trait_energy', 0.5),
     ('gradcam', None, 'trait_pointing', 0.5), ('gradcam', None, 'trait_energy', 0.3),
     ('uniform', None, 'trait_energy', 0.25)]
    """
    rows = map_truth[map_truth["rank"].isna() | (map_truth["rank"] == 0)]
    records = []
    for (method, alpha), group in rows.groupby(["method", "alpha"], dropna=False, sort=True):
        for name, chosen in _subsets(group, subsets):
            n = chosen["image_id"].nunique()
            records.append(_record(method, alpha, "trait_pointing", name, chosen["trait_pointing"].mean(), n))
            records.append(_record(method, alpha, "trait_energy", name, chosen["trait_energy"].mean(), n))
    images = rows.drop_duplicates("image_id")
    for name, chosen in _subsets(images, subsets):
        records.append(_record("uniform", None, "trait_energy", name, chosen["trait_area"].mean(), len(chosen)))
    return records


def trait_part_scores(traits: pd.DataFrame, truth: Mapping[str, list[str]], subsets: Subsets) -> list[dict]:
    """Is the part a map names for a species (``species_traits``) where the species' trait is? ``trait_part``:
    the share of the species with a known trait part whose named part is one of them, per method and alpha
    (Prompt-CAM's top-ranked head); INTR's heads each on their own (``level`` "head <k>"). The answer a user
    reads, scored: a map can put mass near the trait and still name another part.

    Parameters
    ----------
    traits : pandas.DataFrame
        ``species_traits`` rows with their ``method``.
    truth : mapping of str to list of str
        Each species' trait part(s): both sides where the trait is on both (``left_forewing``,
        ``right_forewing``), each counting as right.
    subsets : mapping
        Subset name -> its species (None: all).

    Examples
    --------
    >>> traits = pd.DataFrame({"method": "gradcam", "alpha": np.nan, "rank": None, "head": None,
    ...                        "species": ["A a", "B b", "C c"], "part": ["left_forewing", "head", "thorax"]})
    >>> truth = {"A a": ["left_forewing", "right_forewing"], "B b": ["abdomen"], "C c": ["thorax"]}
    >>> [(r["subset"], round(r["value"], 3), r["n"]) for r in trait_part_scores(traits, truth, {"all": None})]
    [('all', 0.667, 3)]
    """
    rows = traits[(traits["rank"].isna() | (traits["rank"] == 0)) & traits["species"].isin(list(truth))]
    records = []
    for (method, alpha, head), group in rows.groupby(["method", "alpha", "head"], dropna=False, sort=True):
        right = pd.Series([part in truth[name] for name, part in zip(group["species"], group["part"])],
                          index=group.index)
        for name, chosen in _subsets(group, subsets):
            record = _record(method, alpha, "trait_part", name, right[chosen.index].mean(), len(chosen))
            records.append({**record, "level": None if pd.isna(head) else f"head {int(head)}"})
    return records


def _image_agreement(group: pd.DataFrame) -> pd.Series:
    """One image's map against its part effects: the Spearman correlation of the map's mass share per part with
    each part's effect (the drop of the target's logit), and whether the map's top part has the largest effect.
    Undefined (NaN) under 3 parts or where either side is constant."""
    mass, effect = group["mass_share"].to_numpy(float), -group["delta_logit"].to_numpy(float)
    top1 = float(np.argmax(mass) == np.argmax(effect)) if np.ptp(mass) > 0 else np.nan
    if len(group) < 3 or np.ptp(mass) == 0 or np.ptp(effect) == 0:
        return pd.Series({"spearman": np.nan, "top1": top1})
    ranks = [pd.Series(v).rank().to_numpy() for v in (mass, effect)]
    return pd.Series({"spearman": float(np.corrcoef(*ranks)[0, 1]), "top1": top1})


def part_effect_scores(cam_parts: pd.DataFrame, effects: pd.DataFrame, intervened: Mapping[str, str],
                       subsets: Subsets) -> list[dict]:
    """Every map against its model's own evidence (FunnyBirds' single-deletion score, on SST's parts), per method
    and alpha (Prompt-CAM's top-ranked head; INTR's heads each, ``level`` "head <k>"), as the mean over images of:
    ``part_effect_spearman``, the Spearman correlation between the map's mass share per part and the drop of the
    target's logit when that part is removed; ``part_effect_top1``, whether the map's top part is the part whose
    removal drops the logit most. Needs no truth: the parts are SST's, the effects the model's.

    Parameters
    ----------
    cam_parts : pandas.DataFrame
        ``cam_parts`` rows with their ``method`` (the map product).
    effects : pandas.DataFrame
        ``part_effects`` rows with their ``model``.
    intervened : mapping of str to str
        Map product -> the ``part_effects`` model it explains (:func:`traitpipe.products.intervened_models`).
    subsets : mapping

    Examples
    --------
    >>> maps = pd.DataFrame({"method": "gradcam", "alpha": np.nan, "head": None, "rank": None, "image_id": "a",
    ...                      "species": "s", "part_id": [1, 2, 3], "mass_share": [0.7, 0.2, 0.1]})
    >>> effects = pd.DataFrame({"model": "classifier", "image_id": "a", "part_id": [1, 2, 3],
    ...                         "delta_logit": [-2.0, -0.5, 0.1]})
    >>> [(r["metric"], r["value"]) for r in part_effect_scores(maps, effects, {"gradcam": "classifier"}, {"all": None})]
    [('part_effect_spearman', 1.0), ('part_effect_top1', 1.0)]
    """
    rows = cam_parts[(cam_parts["rank"].isna() | (cam_parts["rank"] == 0)) & cam_parts["method"].isin(list(intervened))]
    # Prompt-CAM's top-ranked head is one map, whichever head it is in an image; INTR's heads are each their own
    rows = rows.assign(model=rows["method"].map(intervened), head=rows["head"].where(rows["rank"].isna()))
    present = effects[effects["delta_logit"].notna()][["model", "image_id", "part_id", "delta_logit"]]
    joined = rows.merge(present, on=["model", "image_id", "part_id"])
    joined = joined[joined["mass_share"].notna()]
    records = []
    keys = ["method", "alpha", "head"]
    for (method, alpha, head), group in joined.groupby(keys, dropna=False, sort=True):
        per_image = group.groupby(["image_id", "species"], sort=False)[["mass_share", "delta_logit"]].apply(
            _image_agreement).reset_index()
        for name, chosen in _subsets(per_image, subsets):
            for metric in ("spearman", "top1"):
                values = chosen[metric].dropna()
                record = _record(method, alpha, f"part_effect_{metric}", name,
                                 values.mean() if len(values) else np.nan, len(values))
                records.append({**record, "level": None if pd.isna(head) else f"head {int(head)}"})
    return records


def faithfulness_scores(cams: pd.DataFrame, subsets: Subsets) -> list[dict]:
    """The mean relative confidence drop (Finer-CAM's RD, docs/methods.md) per method and alpha, named for the
    share of pixels masked.

    A map that ranks no pixel (all zero, say) masks nothing and has no RD, so each method would otherwise be
    averaged over its own images. ``relative_drop@0.05`` compares every method over the SAME images: those
    that every method and alpha scored at that share (``n`` says how many). ``relative_drop_own@0.05`` is each
    method's mean over all the images it scored, with its own ``n``.

    Parameters
    ----------
    cams : pandas.DataFrame
        ``cams`` rows with their ``method``, ``alpha``, ``mask_fraction``, ``relative_drop`` (NaN where
        nothing was masked) and the image's ``species``.

    Examples
    --------
    Finer-CAM's map of image b ranks no pixel: the comparison leaves b out for Grad-CAM too.

    >>> rows = pd.DataFrame({"method": "gradcam", "alpha": [np.nan, np.nan, 1.0, 1.0], "species": ["s", "t"] * 2,
    ...                      "image_id": ["a", "b"] * 2, "mask_fraction": 0.05,
    ...                      "relative_drop": [0.2, 0.4, 0.6, np.nan]})
    >>> [(r["alpha"], r["metric"], r["subset"], round(r["value"], 3), r["n"])
    ...  for r in faithfulness_scores(rows, {"all": None, "t": {"t"}})]  # doctest: +NORMALIZE_WHITESPACE
    [(1.0, 'relative_drop@0.05', 'all', 0.6, 1), (1.0, 'relative_drop_own@0.05', 'all', 0.6, 1),
     (None, 'relative_drop@0.05', 'all', 0.2, 1), (None, 'relative_drop_own@0.05', 'all', 0.3, 2),
     (None, 'relative_drop_own@0.05', 't', 0.4, 1)]
    """
    records = []
    for fraction, at_share in cams.groupby("mask_fraction", sort=True):
        share = f"{float(fraction):.3g}"
        groups = at_share.groupby(["method", "alpha"], dropna=False, sort=True)
        scored = [set(group.loc[group["relative_drop"].notna(), "image_id"]) for _, group in groups]
        common = set.intersection(*scored)
        for (method, alpha), group in groups:
            group = group.dropna(subset=["relative_drop"])
            for metric, rows in ((f"relative_drop@{share}", group[group["image_id"].isin(common)]),
                                 (f"relative_drop_own@{share}", group)):
                for name, chosen in _subsets(rows, subsets):
                    records.append(_record(method, alpha, metric, name, chosen["relative_drop"].mean(),
                                           chosen["image_id"].nunique()))
    return records


def zero_shot_scores(cams: pd.DataFrame, subsets: Subsets) -> list[dict]:
    """A CLIP's zero-shot accuracy per product: the share of images whose own prompt (their species', or their
    species' concept) is the prompt most similar to them. Only ``cams`` rows with prompts and a true target count.

    Examples
    --------
    >>> rows = pd.DataFrame({"method": "clip-concept-gradcam", "alpha": [np.nan, 1.0, np.nan], "species": "s",
    ...                      "image_id": ["a", "a", "b"], "target_source": "true",
    ...                      "target_prompt": ["red", "red", "red"], "predicted_prompt": ["red", "red", "blue"]})
    >>> [(r["metric"], r["value"], r["n"]) for r in zero_shot_scores(rows, {"all": None})]
    [('zero_shot_accuracy', 0.5, 2)]
    """
    if "predicted_prompt" not in cams:
        return []
    rows = cams[cams["predicted_prompt"].notna() & (cams["target_source"] == "true")].drop_duplicates(
        ["method", "image_id"])
    records = []
    for method, group in rows.groupby("method", sort=True):
        for name, chosen in _subsets(group, subsets):
            records.append(_record(method, None, "zero_shot_accuracy", name,
                                   (chosen["predicted_prompt"] == chosen["target_prompt"]).mean(), len(chosen)))
    return records
