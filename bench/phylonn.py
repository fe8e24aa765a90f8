"""Phylo-NN code generation speed against a bare forward of the encoder and disentangler.

Same random-weight model (the demo's tiny shape, 64x64 images) and the same batch of
128 images on the CPU: (a) traitpipe.phylo.training.generate_codes (codes, reconstruction
error, level logits, copied to the CPU); (b) the limit: one inference forward pass of the
encoder and the disentangler on the batch. Goal: a/b >= 0.85. Last line: a JSON object.
"""

from __future__ import annotations

import json
import time

import torch

from traitpipe.phylo.model import Disentangler
from traitpipe.phylo.vqgan import VQGAN
from traitpipe.phylo.training import generate_codes

BATCH, REPEATS, SIZE = 128, 5, 64


def best_time(run) -> float:
    """Fastest of REPEATS runs after a warm-up, in seconds."""
    run()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    device = torch.device("cpu")
    base = VQGAN(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=SIZE, z_channels=64,
                 embed_dim=64, n_embed=128).eval()
    model = Disentangler(64, 16, [3, 6, 9, 38], ["033distance", "05distance", "077distance"], hidden=64,
                         phylo_channels=32, nonphylo_levels=4).eval()
    images = torch.rand(BATCH, 3, SIZE, SIZE) * 2 - 1

    def codes():
        return generate_codes(base, model, images, batch_size=BATCH, device=device)

    def bare():
        with torch.inference_mode():
            return model(base.encode(images))

    t_codes, t_bare = best_time(codes), best_time(bare)
    fraction = t_bare / t_codes
    print(f"codes {BATCH / t_codes:7.1f} img/s, bare forward {BATCH / t_bare:7.1f} img/s: {fraction:.3f} of the limit")
    print(json.dumps({"fraction_of_limit": round(fraction, 3), "codes_img_s": round(BATCH / t_codes, 1),
                      "bare_img_s": round(BATCH / t_bare, 1), "batch": BATCH, "image_size": SIZE,
                      "threads": torch.get_num_threads(), "goal_fraction": 0.85, "meets_goal": fraction >= 0.85}))


if __name__ == "__main__":
    main()
