"""CAM parity with pytorch-grad-cam 1.5.7 (the reference), on a CNN and a ViT."""

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import FinerCAM, GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from torch import nn

from traitpipe.explain.batch import explain_batch
from traitpipe.explain.cam import cam_pass, combine_layers, compute_cams, default_layers, token_grid

REFERENCE = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "hirescam": HiResCAM,
             "layercam": LayerCAM, "gradcamelementwise": GradCAMElementWise}


def _models():
    torch.manual_seed(0)
    cnn = timm.create_model("resnet18", num_classes=6).eval()
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=6, img_size=64, depth=2, reg_tokens=2,
                            no_embed_class=True).eval()
    return {"cnn": (cnn, cnn.layer4[-1]), "vit": (vit, vit.blocks[-1].norm1)}


MODELS = _models()
IMAGES = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _vit_reshape(tensor, model=MODELS["vit"][0]):
    prefix, gh, gw = token_grid(model, tensor.shape[1])
    return tensor[:, prefix:].reshape(tensor.shape[0], gh, gw, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
@pytest.mark.parametrize("method", sorted(REFERENCE))
@pytest.mark.parametrize("alpha", [None, 0.0, 0.6, 1.0, 2.0])
def test_matches_pytorch_grad_cam(kind, method, alpha):
    model, layer = MODELS[kind]
    reshape = _vit_reshape if kind == "vit" else None
    if alpha is None:
        reference = REFERENCE[method](model, [layer], reshape_transform=reshape)(IMAGES, targets=None)
    else:
        reference = FinerCAM(model, [layer], reshape_transform=reshape, base_method=REFERENCE[method])(
            IMAGES, alpha=alpha)
    ours = compute_cams(model, IMAGES, [layer], method=method, alpha=alpha)  # ViT tokens reshaped automatically
    assert ours.shape == (4, 64, 64) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4)


def test_several_layers_and_raw_maps():
    model, _ = MODELS["cnn"]
    reference = GradCAM(model, [model.layer3[-1], model.layer4[-1]])(IMAGES, targets=None)
    ours = compute_cams(model, IMAGES, ["layer3.1", "layer4.1"])
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4)
    raw = compute_cams(model, IMAGES, ["layer4"], normalize=False)
    assert raw.shape == (4, 2, 2) and (raw >= 0).all()
    vit_raw = compute_cams(MODELS["vit"][0], IMAGES, default_layers(MODELS["vit"][0]), normalize=False)
    assert vit_raw.shape == (4, 4, 4)
    # normalised maps are the raw maps min-maxed and resized
    np.testing.assert_allclose(combine_layers([raw], (64, 64), normalize=True).numpy(),
                               compute_cams(model, IMAGES, ["layer4"]).numpy(), atol=1e-6)


def test_targets_and_finer_comparisons():
    model, layer = MODELS["cnn"]
    target = torch.tensor([0, 1, 2, 3])
    reference = FinerCAM(model, [layer], base_method=GradCAM)
    for i in range(4):  # the reference takes one target class per call
        ref = reference(IMAGES[i:i + 1], alpha=1.0, target_idx=int(target[i]))
        ours = compute_cams(model, IMAGES[i:i + 1], [layer], alpha=1.0, target=target[i:i + 1])
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    result, = cam_pass(model, IMAGES, [layer], alphas=[1.0], target=target)
    assert result.compared.shape == (4, 3) and not (result.compared == target[:, None]).any()
    predicted = model(IMAGES).argmax(1)
    other = (predicted + 1) % 6
    mixed, = cam_pass(model, IMAGES, [layer], target=torch.where(torch.arange(4) < 2, -1, other))
    assert mixed.target.tolist() == predicted[:2].tolist() + other[2:].tolist()  # -1: the prediction
    given, = cam_pass(model, IMAGES[2:], [layer], target=other[2:])
    torch.testing.assert_close(mixed.raw[0][2:], given.raw[0])
    two = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    result, = cam_pass(two, IMAGES, ["0"], alphas=[1.0], n_compare=3)  # clamped to the one other class
    assert result.compared.shape == (4, 1)


def test_shared_forward_equals_separate_calls():
    model, layer = MODELS["vit"]
    batch = explain_batch(model, IMAGES, ["blocks.1.norm1"], method="layercam", alphas=[None, 0.6])
    for a, alpha in enumerate([None, 0.6]):
        single = compute_cams(model, IMAGES, ["blocks.1.norm1"], method="layercam", alpha=alpha, normalize=False)
        torch.testing.assert_close(batch.raw[:, a], single)
    assert torch.equal(batch.similar, batch.compared[1][:, 0])  # the paper's d is Finer-CAM's first compared class
    probabilities = model(IMAGES).softmax(1)
    for drop in batch.drops:
        torch.testing.assert_close(drop.p_target, probabilities[torch.arange(4), batch.target])
        torch.testing.assert_close(drop.p_similar, probabilities[torch.arange(4), batch.similar])


def test_hooks_are_released_even_on_error():
    model = timm.create_model("resnet18", num_classes=6).eval()  # untouched by the reference's hooks and grads
    layer = model.layer4[-1]
    for _ in range(3):
        compute_cams(model, IMAGES, [layer])
    assert not layer._forward_hooks
    with pytest.raises(KeyError):
        compute_cams(model, IMAGES, [layer], method="nope")
    with pytest.raises(ValueError, match="logits of shape"):
        compute_cams(nn.Sequential(model, nn.Unflatten(1, (2, 3))), IMAGES, ["0.layer4"])
    assert not layer._forward_hooks
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients computed


def test_unknown_layer_lists_the_nearest_names():
    with pytest.raises(KeyError, match=r"no module 'layer4.9'; nearest names: layer4.1, layer4.0"):
        compute_cams(MODELS["cnn"][0], IMAGES, ["layer4.9"])
    with pytest.raises(KeyError, match="blocks.1.norm1"):
        compute_cams(MODELS["vit"][0], IMAGES, ["blocks.1.norm"])


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_non_square_inputs_match_pytorch_grad_cam_at_each_images_own_grid(method):
    """As the Finer-CAM authors run it (generate_cams.py): each image at its own aspect ratio, sides a multiple of
    the patch, a ViT that takes any size, and the reference's reshape given that image's own grid. Two sizes, each
    its own batch: maps at 3 x 5 and 6 x 4 patches."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=6, img_size=64, depth=2, dynamic_img_size=True).eval()
    layer = vit.blocks[-1].norm1
    for height, width in [(48, 80), (96, 64)]:
        images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        grid = (height // 16, width // 16)

        def reshape(tensor, grid=grid):  # generate_cams.py's reshape_transform, with this image's H and W
            return tensor[:, 1:].reshape(tensor.shape[0], *grid, tensor.shape[2]).permute(0, 3, 1, 2)

        for alpha in (None, 1.0):
            if alpha is None:
                reference = REFERENCE[method](vit, [layer], reshape_transform=reshape)(images, targets=None)
            else:
                reference = FinerCAM(vit, [layer], reshape_transform=reshape, base_method=REFERENCE[method])(
                    images, alpha=alpha)
            ours = compute_cams(vit, images, [layer], method=method, alpha=alpha)
            raw, = cam_pass(vit, images, [layer], method=method, alphas=[alpha])[0].raw
            assert ours.shape == (2, height, width) and raw.shape[-2:] == grid
            np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4)
