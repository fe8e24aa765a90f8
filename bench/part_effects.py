"""Part interventions' cost: traitpipe's batched single deletion against one image and one part at a time, and
against the bare model compute it cannot avoid.

Same model, same 32 images, random weights, CPU: ViT-S/16 at 224, the synthetic collection's 7 parts per image.
(a) reference: one image at a time, one forward pass per part (FunnyBirds' protocol as a loop over images);
(b) traitpipe.explain.interventions.part_effects on the whole batch: one forward pass per part;
(c) the limit: 1 + 7 inference forward passes of the model on the batch.
Cost: parts x images forward passes, (parts + 1) x the batch's forward time. Goal: c/b >= 0.85 (the passes are
the cost; masking and filling add little). b/a is reported: on 2 CPU threads a ViT-S at batch 1 already uses the
cores (measured 1.0x), so batching pays on a GPU, not here. Last line: a JSON object.
"""

from __future__ import annotations

import json

import numpy as np
import timm
import torch

from traitpipe.collection.synthetic import PARTS, SpeciesLook, render_specimen
from traitpipe.explain.interventions import part_effects

from cam import best_time  # bench/cam.py, beside this script

BATCH, SIZE = 32, 224


def specimens() -> tuple[torch.Tensor, torch.Tensor]:
    """32 synthetic specimens at 224 px, normalised, and their 7 true part masks."""
    look = SpeciesLook(body=(0.3, 0.3, 0.3), forewing=(0.6, 0.2, 0.2), hindwing=(0.2, 0.6, 0.2), band=(0.9, 0.9, 0.2),
                       spot=(0.1, 0.1, 0.8), stripe=(0.8, 0.8, 0.8), abdomen_length=0.4, abdomen_width=0.1,
                       forewing_length=0.42, forewing_width=0.18, hindwing_length=0.3, band_position=0.1,
                       band_width=0.3, spot_radius=0.25, stripes=3.0, mark_part="forewing", mark_s=0.2, mark_t=0.1,
                       mark_colour=(1.0, 0.0, 0.5))
    drawn = [render_specimen(look, SIZE, np.random.default_rng(i)) for i in range(BATCH)]
    images = torch.tensor(np.stack([d[0] for d in drawn]), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1
    masks = torch.tensor(np.stack([np.stack([d[1] == p for p in PARTS]) for d in drawn]))
    return images, masks


def main() -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=200).eval()
    images, masks = specimens()
    target, similar = torch.zeros(BATCH, dtype=torch.int64), torch.ones(BATCH, dtype=torch.int64)
    parts = masks.shape[1]

    def run_reference():
        return [part_effects(model, images[i:i + 1], masks[i:i + 1], target[:1], similar[:1]) for i in range(BATCH)]

    def run_ours():
        return part_effects(model, images, masks, target, similar)

    def run_forward():
        with torch.inference_mode():
            for _ in range(parts + 1):
                model(images)

    ours = run_ours().delta_logit
    reference = torch.cat([e.delta_logit for e in run_reference()])
    agree = float((ours - reference).abs().nan_to_num().max())
    t_ref = best_time(run_reference, repeats=1)
    t_ours, t_forward = best_time(run_ours), best_time(run_forward)
    result = {"speedup_vs_ref": round(t_ref / t_ours, 3), "fraction_of_limit": round(t_forward / t_ours, 3),
              "goal_fraction": 0.85, "images_per_s": round(BATCH / t_ours, 2),
              "forward_passes_per_image": parts + 1, "max_abs_diff_vs_ref": float(f"{agree:.3g}"),
              "model": "vit_small_patch16_224", "batch": BATCH, "threads": torch.get_num_threads(), "device": "cpu"}
    result["meets_goal"] = result["fraction_of_limit"] >= 0.85
    print(f"reference {BATCH / t_ref:.1f} img/s, traitpipe {BATCH / t_ours:.1f} img/s, the limit "
          f"{BATCH / t_forward:.1f} img/s ({parts + 1} passes)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
