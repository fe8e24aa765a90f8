"""SST on a CPU at SAM 2's working sizes: seconds per frame at image_size 512 and 1024, traitpipe's propagate
against the plain SAM 2 loop (the reference, and the bare model compute: SAM 2's own video predictor).

Random-weight SAM 2.1 hiera_t (the released size), one synthetic species of FRAMES JPEG frames, two tracked parts
(bench/sst.py's frames and both ways of tracking them), one run each way per size in one process. The first frames
cost less than the later ones: SAM 2's memory bank fills up to 7 frames. These are the figures the README's "What a
CPU-only user should expect" quotes. Goal: traitpipe's frames per second are at least 0.9 of the plain loop's at
each size. Last line: a JSON object.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from sst import make_frames, segment  # bench/sst.py, beside this script

FRAMES, SIZES = 12, (512, 1024)


def main() -> None:
    from traitpipe.segment.sst import load_sam2

    torch.manual_seed(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / str(FRAMES)).mkdir()
        np.save(folder / "support.npy", make_frames(folder / str(FRAMES), FRAMES))
        for size in SIZES:
            predictor = load_sam2("sam2.1_hiera_t", None, device="cpu", image_size=size)
            seconds = {way: segment(predictor, way, folder, FRAMES) for way in ("plain", "traitpipe")}
            results[size] = {f"s_per_frame_{way}": round(s / FRAMES, 2) for way, s in seconds.items()}
            results[size]["ratio_vs_plain"] = round(seconds["plain"] / seconds["traitpipe"], 3)
            print(f"image_size {size}: {results[size]}", flush=True)
    worst = min(r["ratio_vs_plain"] for r in results.values())
    print(json.dumps({"frames": FRAMES, "threads": torch.get_num_threads(), "model": "sam2.1_hiera_t",
                      **{str(size): r for size, r in results.items()}, "worst_ratio_vs_plain": worst,
                      "goal_ratio_vs_plain": 0.9, "met": worst >= 0.9}))


if __name__ == "__main__":
    main()
