"""SST speed and memory: traitpipe.segment.sst.propagate against the plain SAM 2 loop.

Same random-weight SAM 2.1 tiny at image_size 256, same frames (one synthetic species,
JPEG files), two tracked parts. The plain loop is SAM 2's documented use: a JPEG
folder, init_state, add_new_mask per part, propagate_in_video. Memory: each run a fresh
process, peak RSS at 40 and 240 frames gives megabytes per extra frame. Speed: both
ways alternately in one process, best of 3 (the machine's noise is larger than the gap).
Goals: speedup >= 1.0; traitpipe's memory per extra frame <= 10% of the plain loop's.
Last line: a JSON object.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMAGE_SIZE, SHORT, LONG = 256, 40, 240


class JpegFrames:
    """Frames read from a folder of ``<i>.jpg`` when indexed (nothing held in memory)."""

    def __init__(self, folder: Path, count: int):
        self.folder, self.count = folder, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image

        return np.array(Image.open(self.folder / f"{index}.jpg").convert("RGB"))


def make_frames(folder: Path, count: int) -> np.ndarray:
    """Write ``count`` specimens of one species as JPEGs; return the support's labels (2 parts: wings, body)."""
    from PIL import Image

    from traitpipe.collection.synthetic import _look_from_traits, render_specimen

    look = _look_from_traits(np.zeros(27), ("forewing", 0.1, 0.1, (1.0, 0.1, 0.1)))
    support = None
    for i in range(count):
        image, labels, _ = render_specimen(look, 128, np.random.default_rng([7, i]))
        Image.fromarray(image).save(folder / f"{i}.jpg", quality=95)
        if i == 0:
            support = np.where(labels >= 4, 1, np.where(labels > 0, 2, 0)).astype(np.uint8)
    return support


def segment(predictor, mode: str, folder: Path, count: int) -> float:
    """Track the frames of ``folder/<count>`` one way; return the seconds it took."""
    import torch

    from traitpipe.segment.sst import propagate

    support = np.load(folder / "support.npy")
    start = time.perf_counter()
    if mode == "traitpipe":
        maps = propagate(predictor, JpegFrames(folder / str(count), count), support).labels
    else:
        state = predictor.init_state(str(folder / str(count)))
        for part in (1, 2):
            predictor.add_new_mask(state, frame_idx=0, obj_id=part, mask=support == part)
        maps, masks = [], []  # the label image and each part's own mask, as traitpipe keeps both
        for _, ids, logits in predictor.propagate_in_video(state):
            best, index = logits[:, 0].max(0)
            maps.append(torch.where(best > 0, torch.tensor(ids, dtype=torch.uint8)[index], 0).numpy())
            masks.append((logits[:, 0] > 0).numpy())
    assert len(maps) == count
    return time.perf_counter() - start


def worker(mode: str, folder: Path, count: int) -> dict:
    """One run in a fresh process. Mode "plain" or "traitpipe": seconds and peak RSS (MB) of one
    run of ``count`` frames. Mode "speed": both ways alternately, 3 times each, best seconds of each."""
    import torch

    from traitpipe.segment.sst import load_sam2

    torch.manual_seed(0)
    predictor = load_sam2("sam2.1_hiera_t", None, device="cpu", image_size=IMAGE_SIZE)
    if mode == "speed":
        times = {"plain": [], "traitpipe": []}
        for _ in range(3):
            for way in times:
                times[way].append(segment(predictor, way, folder, count))
        return {way: min(t) for way, t in times.items()}
    seconds = segment(predictor, mode, folder, count)
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(mode: str, folder: Path, count: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", mode, str(folder), str(count)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for count in (SHORT, LONG):
            (folder / str(count)).mkdir()
            support = make_frames(folder / str(count), count)
        np.save(folder / "support.npy", support)
        results = {}
        for mode in ("plain", "traitpipe"):
            for count in (SHORT, LONG):
                results[mode, count] = run(mode, folder, count)
                print(f"{mode:>9} {count:>3} frames: {count / results[mode, count]['seconds']:5.2f} frames/s, "
                      f"peak RSS {results[mode, count]['peak_rss_mb']:7.1f} MB", flush=True)
        best = run("speed", folder, SHORT)
    per_frame = {mode: (results[mode, LONG]["peak_rss_mb"] - results[mode, SHORT]["peak_rss_mb"]) / (LONG - SHORT)
                 for mode in ("plain", "traitpipe")}
    fps = {mode: SHORT / best[mode] for mode in ("plain", "traitpipe")}
    print(f"speed, best of 3 alternating runs of {SHORT} frames in one process: plain {fps['plain']:.2f}, "
          f"traitpipe {fps['traitpipe']:.2f} frames/s", flush=True)
    speedup = fps["traitpipe"] / fps["plain"]
    ratio = per_frame["traitpipe"] / per_frame["plain"]
    print(json.dumps({"speedup_vs_plain": round(speedup, 3),
                      "rss_mb_per_frame_traitpipe": round(per_frame["traitpipe"], 4),
                      "rss_mb_per_frame_plain": round(per_frame["plain"], 4),
                      "memory_ratio": round(ratio, 4), "fps_traitpipe": round(fps["traitpipe"], 3),
                      "fps_plain": round(fps["plain"], 3), "image_size": IMAGE_SIZE, "frames": [SHORT, LONG],
                      "parts": 2, "goal_speedup": 1.0, "goal_memory_ratio": 0.1,
                      "meets_goal": speedup >= 1.0 and ratio <= 0.1}))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
