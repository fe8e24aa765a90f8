"""Prompt-CAM training step: class prompts on the run's classifier backbone, frozen.

Writes ``models/prompt_cam.pt`` in the authors' layout (backbone weights,
``vpt.prompt_embeddings``, ``head.*``) with its sha256 and accuracy; or, when
``prompt_cam.checkpoint`` names a released checkpoint, loads and records that instead.
"""

from __future__ import annotations

import sys

import pandas as pd
import torch

from traitpipe.explain.prompt_cam import load_released
from traitpipe.jobs.common import job_arguments, labelled_images, start_job, write_failures, write_json
from traitpipe.jobs.models import class_order, prompt_model
from traitpipe.models.checkpoints import load_state_dict, sha256_file
from traitpipe.models.device import resolve_device
from traitpipe.models.training import predict, train_classifier
from traitpipe.store.atomic import atomic_path
from traitpipe.store.provenance import provenance
from traitpipe.store.tables import write_table


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job prompt_cam_train --config RUN_CONFIG --images T.. --classifier F --classifier-description F
    --weights F --description F --evaluation T --failures T``."""
    args = job_arguments("prompt_cam_train", paths=("classifier", "classifier_description", "weights", "description",
                                                    "evaluation", "failures"), lists=("images",)).parse_args(argv)
    config = start_job(args)
    settings = config["prompt_cam"]
    device = resolve_device(config["device"])
    torch.manual_seed(settings["seed"])
    model, meta = prompt_model(args.classifier, args.classifier_description, drop_path=settings["drop_path"],
                               prompt_dropout=settings["prompt_dropout"])
    rows, images, labels, is_val, failures = labelled_images(config, args.images, meta["input_size"], meta["mean"],
                                                             meta["std"], settings["val_fraction"], settings["seed"])
    mask = torch.from_numpy(is_val)
    history, source, classes, warning = [], "trained here", meta["classes"], None
    if settings["checkpoint"] is not None:
        state = load_state_dict(settings["checkpoint"])
        load_released(model, state)
        source = f"released checkpoint {settings['checkpoint']}"
        classes, warning = class_order(settings["classes"], settings["checkpoint"], meta["classes"],
                                       state["vpt.prompt_embeddings"].shape[1], config, "prompt_cam")
        order = {name: i for i, name in enumerate(classes)}
        labels = torch.as_tensor(rows["species"].map(order).to_numpy(), dtype=torch.long)
    else:
        history = train_classifier(
            model, images[~mask], labels[~mask], epochs=settings["epochs"], batch_size=settings["batch_size"],
            lr=settings["lr"], weight_decay=settings["weight_decay"], linear_probe=False, seed=settings["seed"],
            device=device, warmup_epochs=settings["warmup_epochs"], label_smoothing=0.0, optimizer="sgd",
            trainable=[model.prompts, *model.head.parameters()], crop_scale=240 / 224,
            val=(images[mask], labels[mask]), desc="train Prompt-CAM", precision=settings["precision"])
    model.eval()
    correct = (predict(model, images, settings["batch_size"], device, settings["precision"]).argmax(1) == labels).numpy()
    accuracy = {subset: (float(correct[m].mean()) if m.any() else float("nan"), int(m.sum()))
                for subset, m in (("train", ~is_val), ("val", is_val))}
    weights, description = args.weights, args.description
    state = {k: v.cpu() for k, v in model.backbone.state_dict().items()}
    state.update({"vpt.prompt_embeddings": model.prompts.detach().cpu(), "head.weight": model.head.weight.detach().cpu(),
                  "head.bias": model.head.bias.detach().cpu()})
    with atomic_path(weights) as tmp:
        torch.save(state, tmp)
    write_json(description, {"classifier": meta, "classes": classes, "source": source,
                             "sha256": sha256_file(weights), "accuracy": {k: v[0] for k, v in accuracy.items()}, "history": history,
                             "settings": settings, "device": str(device)})
    prov = provenance(config, device=str(device), precision=settings["precision"],
                      models={"prompt_cam": {"sha256": sha256_file(weights), "random_weights": False, "source": source,
                                             "class_order_warning": warning}})
    evaluation = pd.DataFrame([{"model": "prompt_cam", "metric": "top1_accuracy", "subset": subset, "level": None,
                                "value": value, "n": n} for subset, (value, n) in accuracy.items()])
    write_table(evaluation, args.evaluation, "evaluation", prov)
    write_failures(args.failures, failures, prov)
    print(f"prompt_cam_train: {source}, train accuracy {accuracy['train'][0]:.3f}, "
          f"val accuracy {accuracy['val'][0]:.3f}", file=sys.stderr)
