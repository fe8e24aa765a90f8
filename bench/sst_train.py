"""Training a SAM 2 here: wall time and held-out mIoU against epochs, on the demo collection.

The small SAM 2 (`sam2_small`, 128 px) trains with SAM 2's own training form on pseudo-videos of the demo
collection's species, two species held out and validated on (SST's mIoU on their query images, their first
specimen's true labels as the prompt). Goal (issue 15): mIoU >= 0.7 within the demo's budget.
Usage: bench/sst_train.py [EPOCHS] [VALIDATE_EVERY]. Last line: a JSON object.
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
from traitpipe.jobs.sam2_train import held_out_species
from traitpipe.segment.sst import config_file
from traitpipe.segment.train import train_sam2


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    every = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        videos = truth_videos(synthesize(Path(tmp) / "demo", **DEMO_PARAMS))
    held = held_out_species(sorted(videos), 2, 0)
    start = time.perf_counter()
    _, history = train_sam2(config_file("sam2_small"), 128, videos, held, list(range(1, 8)), epochs=epochs,
                            frames=4, lr=1e-3, weight_decay=0.1, validate_every=every, seed=0)
    seconds = time.perf_counter() - start
    for record in history:
        if "val_miou" in record:
            print(f"epoch {record['epoch']:4d}  loss {record['loss']:.3f}  held-out mIoU {record['val_miou']:.3f}")
    curve = [{"epoch": r["epoch"], "loss": round(r["loss"], 4), "val_miou": round(r["val_miou"], 4)}
             for r in history if "val_miou" in r]
    print(json.dumps({"bench": "sst_train", "epochs": epochs, "train_species": len(videos) - len(held),
                      "held_out": held, "seconds": round(seconds, 1),
                      "seconds_per_epoch": round(seconds / epochs, 2), "curve": curve,
                      "final_val_miou": curve[-1]["val_miou"], "goal_val_miou": 0.7}))


if __name__ == "__main__":
    main()
