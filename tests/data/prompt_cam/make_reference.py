"""Write ``reference.pt``: the Prompt-CAM authors' own code run on a tiny random ViT, for tests/test_prompt_cam.py.

Usage: python tests/data/prompt_cam/make_reference.py PATH_TO_PROMPT_CAM_CHECKOUT

PATH_TO_PROMPT_CAM_CHECKOUT is a copy of github.com/Imageomics/Prompt_CAM (read at commit 7722fc2).
Nothing of their code is stored here: their functions are read from the checkout when this script runs.

Uses, unmodified, from the checkout (github.com/Imageomics/Prompt_CAM):
  * model/vision_transformer.py VisionTransformerPETL (+ model/vpt.py, block.py, attention.py, ...)
  * experiment/visualize_run.py prune_attn_heads   (the basic_vis routine; partial greedy, top_traits)
  * utils/visual_utils.py prune_and_plot_ranked_heads, its ranking loop only (the full greedy; the
    plotting after the loop is cut off by AST surgery and the loop's lists are returned)
  * engine/trainer.py's scheduler construction and stepping pattern (timm CosineLRScheduler,
    step_update per batch + step(epoch) per epoch), replayed for the CUB configs.
Only utils.setup_logging (termcolor/iopath) and the image-writing helpers (cv2) are stubbed.

Saves a dict (see the bottom of main()) to reference.pt beside this script, and each case's checkpoint in the
authors' exact on-disk layout ({'model_state_dict': model.state_dict()}) beside it.
"""

from __future__ import annotations

import ast
import logging
import sys
import types
from pathlib import Path

import torch


def _install_packages(checkout: Path) -> None:
    """Make `model`, `utils`, `experiment`, `engine` resolve to the checkout, whatever else is on sys.path."""
    for name in ("model", "utils", "experiment", "engine", "data"):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(checkout / name)]
        sys.modules[name] = pkg
    stub = types.ModuleType("utils.setup_logging")
    stub.get_logger = lambda name="Prompt_CAM": logging.getLogger(name)
    stub.setup_logging = lambda *a, **k: None
    sys.modules["utils.setup_logging"] = stub


def _function_from(path: Path, name: str, cut_after_while: bool = False, returns: str | None = None):
    """The source of one top-level function of `path`; optionally keep only its statements up to its first
    top-level `while` loop and return `returns`."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    if cut_after_while:
        i = next(i for i, s in enumerate(fn.body) if isinstance(s, ast.While))
        fn.body = fn.body[: i + 1] + [ast.parse(f"return {returns}").body[0]]
    elif returns is not None:  # the whole body, then return some of its locals
        fn.body = fn.body + [ast.parse(f"return {returns}").body[0]]
    return ast.unparse(ast.fix_missing_locations(ast.Module(body=[fn], type_ignores=[])))


def _lr_trace(config: dict, steps_per_epoch: int = 5) -> list[float]:
    """The learning rate each epoch trains with, replaying engine/trainer.py's use of CosineLRScheduler."""
    from timm.scheduler.cosine_lr import CosineLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config["lr"], momentum=0.9,
                          weight_decay=config["wd"])
    sched = CosineLRScheduler(opt, t_initial=config["epoch"], warmup_t=config["warmup_epoch"],
                              lr_min=config["lr_min"], warmup_lr_init=config["warmup_lr_init"])
    used = []
    for epoch in range(config["epoch"]):
        num_updates = epoch * steps_per_epoch
        lrs = set()
        for _ in range(steps_per_epoch):  # train_one_epoch
            lrs.add(opt.param_groups[0]["lr"])
            num_updates += 1
            sched.step_update(num_updates=num_updates, metric=0.0)
        assert len(lrs) == 1, "step_update changed the lr within an epoch"
        used.append(lrs.pop())
        sched.step(epoch)  # train_classifier, end of epoch
    return used


SCALE = {"patch": 0.3, "head": 0.5, "qkv": 0.6, "proj": 0.5}  # std of re-drawn weights


def main(checkout: str, out: str = str(Path(__file__).with_name("reference.pt"))) -> None:
    checkout = Path(checkout).resolve()
    _install_packages(checkout)
    sys.path.insert(0, str(checkout))
    from model.vision_transformer import VisionTransformerPETL  # their model

    ns: dict = {"torch": torch}
    # basic_vis's ranking routine, verbatim; the image writers are replaced by recorders
    exec(_function_from(checkout / "experiment/visualize_run.py", "prune_attn_heads",
                        returns="(blur_head_lst, sorted_remaining_heads, remaining_head_list, remaining_head_scores)"),
         ns)
    exec(_function_from(checkout / "utils/visual_utils.py", "prune_and_plot_ranked_heads",
                        cut_after_while=True, returns="(blur_head_lst, blur_head_probs)"), ns)
    recorded = {}

    def create_overlay_images(X, patch_size, attentions, output_folder):
        recorded["attn_map"] = attentions.detach().clone()

    ns["create_overlay_images"] = create_overlay_images
    ns["combine_images"] = lambda path, pred_class, resize_dim=(200, 200): recorded.__setitem__("pred", pred_class)
    ns["notImplementedError"] = NotImplementedError

    cases = []
    for case, (heads, top_traits, init_values) in enumerate([(2, 1, None), (4, 2, None), (4, 2, 0.5)]):
        num_classes, dim, depth, patch, img = 3, 16, 2, 4, 16
        params = types.SimpleNamespace(train_type="prompt_cam", vpt_num=num_classes, vpt_mode=None, vpt_layer=None,
                                       vpt_dropout=0.0, vis_attn=True, top_traits=top_traits,
                                       output_dir="unused")  # nothing is written there: the image writers are replaced
        torch.manual_seed(case)
        model = VisionTransformerPETL(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                                      num_classes=num_classes, init_values=init_values, drop_path_rate=0.0,
                                      params=params)
        model.reset_classifier(num_classes)  # as experiment/build_model.get_base_model: head = Linear(D, 1)
        with torch.no_grad():  # make the last block's heads matter (random init is too uniform)
            model.patch_embed.proj.weight.normal_(0, SCALE["patch"])
            model.vpt.prompt_embeddings.normal_(0, 1.0)
            model.head.weight.normal_(0, SCALE["head"])
            for block in model.blocks:
                block.attn.qkv.weight.normal_(0, SCALE["qkv"])
                block.attn.proj.weight.normal_(0, SCALE["proj"])
        model.eval()
        images = torch.randn(4, 3, img, img)
        samples = []
        for i in range(len(images)):
            x = images[i: i + 1]
            with torch.no_grad():
                outputs, attn = model(x)  # (1, C, 1), (1, heads, T, T) post-softmax, last block
                logits = outputs.squeeze(-1)
                predicted = torch.argmax(outputs, dim=1).item()
                true = predicted if i % 2 == 0 else (predicted + 1) % num_classes  # even: correct, odd: wrong
                single = torch.stack([model(x, blur_head_lst=[h], target_cls=true)[0].squeeze(-1)[0]
                                      for h in range(heads)])  # (heads, C): logits with head h blurred for `true`
                full_order, full_probs = ns["prune_and_plot_ranked_heads"](model, x, true, params)
                sample = {"image": x.clone(), "true": true, "predicted": predicted, "logits": logits[0].clone(),
                          "attn_last": attn[0].clone(),
                          "maps": attn[0, :, :num_classes, num_classes + 1:].reshape(heads, num_classes, img // patch,
                                                                                     img // patch).clone(),
                          "single_head_blurred_logits": single,
                          "full_removal_order": list(full_order), "full_removal_probs": list(full_probs),
                          "full_ranking_most_to_least": list(full_order)[::-1]}
                # basic_vis, as experiment/visualize_run.py
                recorded.clear()
                if predicted == true:
                    blurred, shown, remaining, last_scores = ns["prune_attn_heads"](
                        model, x, torch.tensor([true]), predicted, i + 1, params)
                    sample["basic_vis"] = {"branch": "ranked", "attn_map": recorded["attn_map"][0],
                                           "blur_head_lst": list(blurred), "heads_shown_in_order": list(shown),
                                           "remaining_head_list": list(remaining),
                                           "last_round_scores": list(last_scores)}
                else:
                    a = attn[:, :, true, (params.vpt_num + 1):]
                    sample["basic_vis"] = {"branch": "wrong prediction: all heads of the true class, unranked",
                                           "attn_map": a[0].clone(), "heads_shown_in_order": list(range(heads))}
            samples.append(sample)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ckpt = Path(out).with_name(f"reference_case{case}_model.pt")
        torch.save({"model_state_dict": model.state_dict()}, ckpt)  # engine/trainer.py layout
        cases.append({"config": {"img_size": img, "patch_size": patch, "embed_dim": dim, "depth": depth,
                                 "num_heads": heads, "num_classes": num_classes, "init_values": init_values,
                                 "top_traits": top_traits, "qkv_bias": True, "timm_base": "VisionTransformer"},
                      "state_dict": state, "checkpoint_file": str(ckpt), "samples": samples})

    cub = {"dino": dict(epoch=130, warmup_epoch=20, lr=0.005, lr_min=1e-6, warmup_lr_init=0.0, wd=0.001),
           "dinov2": dict(epoch=130, warmup_epoch=20, lr=0.001, lr_min=1e-6, warmup_lr_init=1e-6, wd=0.001)}
    lr = {name: {"config": c, "lr_per_epoch": _lr_trace(c)} for name, c in cub.items()}
    torch.save({"cases": cases, "lr_schedule": lr,
                "notes": "maps = last-block post-softmax attention rows of the class prompts over patch tokens "
                         "(columns vpt_num+1:). full_removal_order = blur order (least important first). "
                         "basic_vis ranks only when predicted == true."}, out)
    print("saved", out)
    for c in cases:
        for s in c["samples"]:
            print(c["config"]["num_heads"], c["config"]["init_values"], "true", s["true"], "pred", s["predicted"],
                  "full ranking", s["full_ranking_most_to_least"], "basic_vis", s["basic_vis"]["branch"][:6],
                  s["basic_vis"]["heads_shown_in_order"])
    print("lr dino epochs 0..3, 19..22, last:", [round(v, 7) for v in lr["dino"]["lr_per_epoch"][:4]],
          [round(v, 7) for v in lr["dino"]["lr_per_epoch"][19:23]], lr["dino"]["lr_per_epoch"][-1])


if __name__ == "__main__":
    main(*sys.argv[1:])
