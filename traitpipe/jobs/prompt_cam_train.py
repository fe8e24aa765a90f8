"""Prompt-CAM training step: class prompts on the run's classifier backbone, frozen.

Writes ``models/prompt_cam.pt`` in the authors' layout (``{"model_state_dict": ...}`` as their
``engine/trainer.py`` saves it: backbone weights, ``vpt.prompt_embeddings``, ``head.*``) with its sha256 and
accuracy; or, when ``prompt_cam.checkpoint`` names a released checkpoint, loads and records that instead.

The description names the input normalisation the model is explained with: the authors' (0.5 mean and std,
:data:`traitpipe.explain.prompt_cam.RELEASED_MEAN`) for their checkpoint, the run classifier's for prompts
trained here on its frozen backbone.

Training follows the authors' recipe (``engine/trainer.py``, the DINO CUB configuration): SGD with momentum 0.9,
timm's cosine schedule stepped per epoch with warm-up, down to ``lr_min``. Two differences: the weights kept are
the last epoch's (theirs, the epoch of best test accuracy, which would tune on the evaluation images), and the
train images are resized to the input size before the 240/224 resize and crop (theirs resize the original).
"""

from __future__ import annotations

import torch

from traitpipe.explain.prompt_cam import RELEASED_MEAN, RELEASED_STD
from traitpipe.jobs.splits import accuracy_rows, cryptic_pairs, labelled_images, split
from traitpipe.jobs.models import class_order, load_prompt_cam
from traitpipe.jobs.step import Step
from traitpipe.models.device import seed_everything
from traitpipe.models.checkpoints import sha256_file
from traitpipe.models.training import predict, train_classifier
from traitpipe.store.atomic import atomic_path
from traitpipe.store.cards import ModelCard, Source


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job prompt_cam_train --config RUN_CONFIG --images T.. --classifier F --classifier-description F
    [--cryptic-pairs F] --weights F --description F --evaluation T --failures T``."""
    step = Step("prompt_cam_train", argv, paths=("classifier", "classifier_description", "weights", "description",
                                                 "evaluation", "failures"), lists=("images",),
                optional=("cryptic_pairs",))
    args, config, device = step.args, step.config, step.device
    settings, checkpoint = config["prompt_cam"], step.checkpoint("prompt_cam")
    seed_everything(settings["seed"])
    model, meta = load_prompt_cam(args.classifier, args.classifier_description, checkpoint,
                                  drop_path=settings["drop_path"], prompt_dropout=settings["prompt_dropout"])
    mean, std = (list(RELEASED_MEAN), list(RELEASED_STD)) if checkpoint is not None else (meta.mean, meta.std)
    rows, images, labels, is_val, failures = labelled_images(config, args.images, meta.input_size, mean, std,
                                                             settings["val_fraction"], settings["seed"])
    workers = config["loader"]["workers"]
    history, source, classes, warning = [], Source("trained here"), meta.classes, None
    if checkpoint is not None:  # released: loaded above
        source = Source("file", checkpoint, sha256_file(checkpoint))
        classes, warning = class_order(settings["classes"], checkpoint, meta.classes,
                                       model.prompts.shape[1], config, "prompt_cam")
        order = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor(rows["species"].map(order).to_numpy(), dtype=torch.long)
    else:
        fit, val = split(images, labels, is_val)
        history = train_classifier(
            model, *fit, epochs=settings["epochs"], batch_size=settings["batch_size"],
            lr=settings["lr"], weight_decay=settings["weight_decay"], linear_probe=False, seed=settings["seed"],
            device=device, warmup_epochs=settings["warmup_epochs"], lr_min=settings["lr_min"],
            warmup_lr_init=settings["warmup_lr_init"], label_smoothing=0.0, optimizer="sgd",
            trainable=[model.prompts, *model.head.parameters()], crop_scale=240 / 224,
            val=val, desc="train Prompt-CAM", precision=settings["precision"],
            max_per_class=config["training"]["max_images_per_species"], workers=workers)
    model.eval()
    correct = (predict(model, images, settings["batch_size"], device, settings["precision"], workers).argmax(1)
               == labels).numpy()
    accuracy, evaluation = accuracy_rows("promptcam", correct, is_val, rows["species"].to_numpy(),
                                         cryptic_pairs(args.cryptic_pairs))
    weights, description = args.weights, args.description
    state = {k: v.cpu() for k, v in model.backbone.state_dict().items()}
    state.update({"vpt.prompt_embeddings": model.prompts.detach().cpu(), "head.weight": model.head.weight.detach().cpu(),
                  "head.bias": model.head.bias.detach().cpu()})
    with atomic_path(weights) as tmp:
        torch.save({"model_state_dict": state}, tmp)
    card = ModelCard("prompt_cam", source, sha256=sha256_file(weights), classes=classes, mean=mean, std=std,
                     input_size=meta.input_size, precision=settings["precision"], accuracy=accuracy,
                     history=history, device=str(device),
                     architecture={"classifier": meta.architecture, "prompts": list(model.prompts.shape)},
                     extra={"class_order_warning": warning, "settings": settings})
    card.write(description)
    step.record(precision=settings["precision"], models={"prompt_cam": card.used()})
    step.write("evaluation", evaluation, args.evaluation)
    step.write_failures(failures)
    step.finish(f"{card.origin()}, train accuracy {accuracy['train']:.3f}, val accuracy {accuracy['val']:.3f}")
