"""CAM speed: traitpipe's batched Finer-CAM against the reference and against a bare forward pass.

Same model, same batch of 32 images, random weights, CPU: ViT-S/16 at 224 and ResNet-50.
(a) reference: pytorch-grad-cam 1.5.7's FinerCAM, one image at a time, as the Finer-CAM authors run it;
(b) traitpipe.explain.cam.compute_cams with Finer-CAM (alpha 1) on the whole batch;
(c) the limit: one inference forward pass of the model on the batch.
Goals: b/a >= 2.5 and b/c >= 0.85 for both models. Last line: a JSON object (the worse model's ratios).
"""

from __future__ import annotations

import json
import time

import numpy as np
import timm
import torch
from pytorch_grad_cam import FinerCAM, GradCAM

from traitpipe.explain.cam import compute_cams

BATCH, REPEATS = 32, 3


def best_time(run, repeats: int = REPEATS, warmup: int = 1) -> float:
    """Fastest of ``repeats`` runs after ``warmup`` runs that are not timed, in seconds."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def vit_reshape(model):
    """(B, N, C) tokens -> (B, C, h, w) patch maps, class and register tokens dropped."""
    prefix, side = model.num_prefix_tokens, model.patch_embed.grid_size[0]
    return lambda t: t[:, prefix:].reshape(t.shape[0], side, side, -1).permute(0, 3, 1, 2)


def bench_model(name: str, arch: str, layer: str) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=200).eval()
    images = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    target_layer = dict(model.named_modules())[layer]
    # the reference needs the ViT token reshape spelled out; traitpipe finds it itself
    reshape = vit_reshape(model) if hasattr(model, "blocks") else None

    reference = FinerCAM(model, [target_layer], reshape_transform=reshape, base_method=GradCAM)

    def run_reference():
        return np.concatenate([reference(images[i:i + 1], alpha=1.0) for i in range(BATCH)])

    def run_ours():
        return compute_cams(model, images, [layer], method="gradcam", alpha=1.0)

    def run_forward():
        with torch.inference_mode():
            return model(images)

    agree = float(np.abs(run_reference() - run_ours().numpy()).max())
    t_ref = best_time(run_reference, repeats=1)
    t_ours, t_forward = best_time(run_ours), best_time(run_forward)
    result = {"model": name, "ref_img_s": BATCH / t_ref, "traitpipe_img_s": BATCH / t_ours,
              "forward_img_s": BATCH / t_forward, "speedup_vs_ref": t_ref / t_ours,
              "fraction_of_limit": t_forward / t_ours, "max_abs_diff_vs_ref": agree}
    print(f"{name:>10}: reference {result['ref_img_s']:6.1f} img/s, traitpipe {result['traitpipe_img_s']:6.1f} img/s, "
          f"forward {result['forward_img_s']:6.1f} img/s -> {result['speedup_vs_ref']:.2f}x reference, "
          f"{result['fraction_of_limit']:.2f} of the limit (max diff {agree:.1e})", flush=True)
    return result


def main() -> None:
    runs = [bench_model("vit_s16", "vit_small_patch16_224", "blocks.11.norm1"),
            bench_model("resnet50", "resnet50", "layer4")]
    speedup = min(r["speedup_vs_ref"] for r in runs)
    fraction = min(r["fraction_of_limit"] for r in runs)
    print(json.dumps({"speedup_vs_ref": round(speedup, 3), "fraction_of_limit": round(fraction, 3),
                      "goal_speedup": 2.5, "goal_fraction": 0.85,
                      "meets_goal": speedup >= 2.5 and fraction >= 0.85, "batch": BATCH,
                      "threads": torch.get_num_threads(), "device": "cpu",
                      "runs": [{k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()}
                               for r in runs]}))


if __name__ == "__main__":
    main()
