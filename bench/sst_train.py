"""Training a SAM 2 here: wall time and held-out mIoU against epochs, on the demo collection.

The small SAM 2 (`sam2_small`, 128 px) trains as `segment.checkpoint: train` does with the default
`segment.train` settings (its encoder pretrained on part labelling, then SAM 2's own video training form) on
pseudo-videos of the demo collection's species, two species held out and validated on (SST's mIoU on their
query images, their first specimen's true labels as the prompt). A run still on the empty-mask plateau at
`restart_at` starts again with the next seed (`segment.train.restarts`); the curve has every attempt. Goal (issue 15): mIoU >= 0.7 within the
demo's budget. Usage: bench/sst_train.py [EPOCHS] [VALIDATE_EVERY] [SEED]. Last line: a JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from traitpipe.cli import DEMO_PARAMS
from traitpipe.collection import synthesize
from traitpipe.collection.synthetic import truth_videos
from traitpipe.config import validate_config
from traitpipe.jobs.sam2_train import TRAIN_KEYS, held_out_species
from traitpipe.segment.sst import config_file
from traitpipe.segment.train import train_sam2


def main() -> None:
    train = validate_config({"collection": {"root": ".", "manifest": "m.csv", "columns": {"parts_truth": "t"}},
                             "segment": {"checkpoint": "train"}})["segment"]["train"]
    for position, key in enumerate(("epochs", "validate_every", "seed"), start=1):
        train[key] = int(sys.argv[position]) if len(sys.argv) > position else train[key]
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        videos = truth_videos(synthesize(Path(tmp) / "demo", **DEMO_PARAMS))
    held = held_out_species(sorted(videos), train["val_species"], train["seed"])
    start = time.perf_counter()
    _, history, pretrain = train_sam2(config_file("sam2_small"), 128, videos, held, list(range(1, 8)),
                                      **{key: train[key] for key in TRAIN_KEYS})
    seconds = time.perf_counter() - start
    curve = [{"attempt": r["attempt"], "epoch": r["epoch"], "seconds": round(r["seconds"], 1),
              "loss": round(r["loss"], 4), "val_miou": round(r["val_miou"], 4),
              **({"fit_miou": round(r["fit_miou"], 4)} if "fit_miou" in r else {})}
             for r in history if "val_miou" in r]
    for point in curve:
        print(f"attempt {point['attempt'] + 1}  epoch {point['epoch']:4d}  {point['seconds']:6.0f} s  "
              f"loss {point['loss']:.3f}  held-out mIoU {point['val_miou']:.3f}"
              + (f"  training species {point['fit_miou']:.3f}" if "fit_miou" in point else ""))
    print(json.dumps({"bench": "sst_train", "train": train, "train_species": len(videos) - len(held),
                      "held_out": held, "seconds": round(seconds, 1), "pretrain_steps": len(pretrain),
                      "pretrain_loss": [round(pretrain[0], 4), round(pretrain[-1], 4)] if pretrain else None,
                      "attempts": history[-1]["attempt"] + 1, "curve": curve,
                      "final_val_miou": curve[-1]["val_miou"], "goal_val_miou": 0.7}))


if __name__ == "__main__":
    main()
