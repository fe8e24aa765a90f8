"""The demo's findings (docs/findings.md) are written from a run's evaluation table; a test of the demo checks them."""

import numpy as np
import pandas as pd
import pytest

from traitpipe.report.findings import END, START, findings, findings_in, replace_findings


def _rows(*records):
    columns = ["stage", "method", "alpha", "metric", "subset", "level", "part", "value", "n"]
    return pd.DataFrame([dict(zip(columns, r)) for r in records], columns=columns)


EVALUATION = _rows(
    ("evaluate", "sst", None, "miou", "held_out", None, None, 0.7912, 22),
    ("evaluate", "sst", None, "miou", "trained", None, None, 0.8034, 66),
    ("evaluate", "sst", None, "miou", "queries", None, None, 0.8001, 88),
    ("sst_finetune", "sst", None, "miou_untuned", "held_out", None, None, 0.7811, 10),
    ("sst_finetune", "sst", None, "miou_tuned", "held_out", None, None, 0.7833, 10),
    ("evaluate", "sst", None, "retrieval_auc", "queries", None, "left_forewing", 0.8721, 88),
    ("evaluate", "sst", None, "round_trip_iou_absent", "queries", None, "left_forewing", 0.0031, 8),
    ("evaluate", "sst", None, "round_trip_iou_damaged", "queries", None, "left_forewing", 0.731, 8),
    ("evaluate", "sst", None, "round_trip_iou_intact", "queries", None, "left_forewing", 0.869, 72),
    ("classifier", "classifier", None, "top1_accuracy", "val", None, None, 0.6667, 24),
    ("classifier", "classifier", None, "pair_accuracy", "A a | B b", None, None, 0.5, 8),
    ("classifier", "classifier", None, "pair_accuracy", "C c | D d", None, None, 1.0, 8),
    ("intr", "intr", None, "pair_accuracy", "A a | B b", None, None, 0.875, 8),
    ("intr", "intr", None, "pair_accuracy", "C c | D d", None, None, 0.75, 8),
    ("evaluate", "gradcam", None, "trait_energy", "all", None, None, 0.0069, 96),
    ("evaluate", "gradcam", 1.0, "trait_energy", "all", None, None, 0.0044, 96),
    ("evaluate", "gradcam", 1.0, "relative_drop@0.05", "cryptic", None, None, 0.096, 48),
    ("evaluate", "gradcam", None, "trait_part", "all", None, None, 0.375, 8),
    ("evaluate", "gradcam", None, "trait_part", "cryptic", None, None, 1 / 3, 6),
    ("evaluate", "gradcam", 1.0, "trait_part", "cryptic", None, None, 0.5, 6),
    ("evaluate", "gradcam", None, "part_effect_spearman", "cryptic", None, None, 0.21, 48),
    ("evaluate", "gradcam", 1.0, "part_effect_spearman", "cryptic", None, None, 0.25, 48),
    ("evaluate", "interventions-classifier", None, "trait_part", "all", None, None, 0.375, 8),
    ("evaluate", "interventions-classifier", None, "trait_part", "cryptic", None, None, 0.5, 6),
    ("evaluate", "intr", None, "trait_part", "all", "head 0", None, 1.0, 8),  # a head: not the map's answer
    ("evaluate", "intr", None, "trait_part", "cryptic", "head 0", None, 0.5, 6),
    ("evaluate", "intr", None, "trait_part", "cryptic", "head 1", None, 2 / 3, 6),
    ("evaluate", "uniform", None, "trait_energy", "all", None, None, 0.0036, 96),
    ("phylonn", "phylonn", None, "spearman_phylo_codes_vs_tree", "held_out", "0", None, 0.78, 28),
    ("phylonn", "phylonn", None, "spearman_phylo_codes_vs_tree", "held_out", "3", None, 0.85, 28),
    ("phylonn", "phylonn", None, "spearman_nonphylo_codes_vs_tree", "held_out", "3", None, 0.34, 28),
)


def test_every_number_comes_from_the_table():
    block = findings(EVALUATION)
    assert max(len(line) for line in block.splitlines() if not line.startswith(("|", "<!--"))) <= 110
    block = " ".join(block.replace("\n  ", " ").split(" "))  # the bullets unwrapped
    assert block.startswith(START) and block.endswith(END + "\n")
    assert "mIoU 0.79 on the species it never saw (22 images) and 0.80 on those it trained on (0.80 over all 88" in block
    assert "(10 images): mIoU 0.781 before, 0.783 after" in block
    assert "IoU of the left_forewing, a specimen with it intact comes before one where it is absent or torn 87% of " \
           "the time (`retrieval_auc` 0.872); the mean round-trip IoU is 0.003 where it is absent, 0.73 where torn, " \
           "0.87 where intact." in block
    assert "right: the classifier the CAMs explain 67% (24 images)." in block
    assert ("- The same on each cryptic pair (A a | B b; C c | D d): the classifier the CAMs explain 50%, 100%; "
            "INTR 88%, 75%.") in block
    assert "(held-out specimens): species distances in the phylogenetic codes follow the tree's with Spearman 0.78 " \
           "to 0.85 over the levels; in the non-phylogenetic codes, 0.34." in block
    assert ("- The part each model's own interventions name for a species (removed, it lowers the margin to the "
            "closest species most), right for: classifier 3 of 8 (3 of 6 cryptic) species.") in block
    # the papers' claims: each score where both the base CAM and its Finer form have one
    assert ("- Finer-gradcam (alpha 1) against gradcam, on the cryptic pairs: part named right 2 of 6 -> 3 of 6 "
            "(better); agreement with the interventions 0.210 -> 0.250 (better).") in block
    assert "- INTR's heads on the cryptic pairs: the best, head 1, names the mark's part for 4 of 6 species" in block
    table = [line for line in block.splitlines() if line.startswith("| ")]
    assert table[2].startswith("| a blind map (`uniform`) | 0.36% |")  # the blind map first, then each map
    assert table[3] == "| gradcam | 0.69% | - | - | - | 3 of 8 | 2 of 6 | - | 0.21 |"
    assert table[4] == "| Finer-gradcam (alpha 1) | 0.44% | - | - | - | - | 3 of 6 | 0.096 | 0.25 |"
    assert len(table) == 5  # INTR's heads are scored one by one, not as the map's answer
    changed = EVALUATION.assign(value=np.where(EVALUATION["metric"] == "top1_accuracy", 0.9, EVALUATION["value"]))
    assert "the classifier the CAMs explain 90%" in findings(changed)  # nothing is written down twice


def test_the_findings_block_is_replaced_whole_and_found_again():
    page = f"# title\n\n{START}\nold numbers\n{END}\n\nmore text\n"
    block = findings(EVALUATION)
    updated = replace_findings(page, block)
    assert updated.startswith("# title\n\n") and updated.endswith("\n\nmore text\n") and "old numbers" not in updated
    assert findings_in(updated) == block
    with pytest.raises(ValueError, match="no findings block"):
        replace_findings("# no block\n", block)
