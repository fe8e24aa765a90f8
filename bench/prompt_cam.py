"""Prompt-CAM head ranking: the cheap batched procedure against the greedy full-forward one.

Same random model (ViT-S/16 at 224: 6 heads, 20 classes, prompts and head drawn so the
heads matter) and the same images, CPU. The greedy procedure costs 21 full forward passes
per image for 6 heads; rank_heads costs about one. Goal: >= 12x with the same order.
Last line: a JSON object.
"""

from __future__ import annotations

import json
import time

import timm
import torch

from traitpipe.explain.prompt_cam import PromptCAM, greedy_rank_heads

IMAGES, CLASSES = 4, 20


def main() -> None:
    torch.manual_seed(0)
    backbone = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=CLASSES)
    model = PromptCAM(backbone, CLASSES).eval()
    with torch.no_grad():
        model.prompts.normal_(0, 1.0)
        model.head.weight.normal_(0, 0.2)
    images = torch.randn(IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = model(images).argmax(1)
    model.rank_heads(images[:1], target[:1])  # warm-up
    start = time.perf_counter()
    cheap = model.rank_heads(images, target)
    t_cheap = time.perf_counter() - start
    start = time.perf_counter()
    greedy = greedy_rank_heads(model, images, target)
    t_greedy = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        model(images)
    t_forward = time.perf_counter() - start
    same = bool(torch.equal(cheap, greedy))
    print(f"rank_heads {t_cheap:.2f} s, greedy {t_greedy:.2f} s, one forward {t_forward:.2f} s "
          f"for {IMAGES} images: {t_greedy / t_cheap:.1f}x, same order: {same}")
    print(json.dumps({"speedup_vs_greedy": round(t_greedy / t_cheap, 2), "same_order": same,
                      "cheap_in_forwards": round(t_cheap / t_forward, 2), "heads": model.num_heads,
                      "classes": CLASSES, "images": IMAGES, "goal_speedup": 12,
                      "meets_goal": same and t_greedy / t_cheap >= 12}))


if __name__ == "__main__":
    main()
