"""Precision is a per-stage setting: bfloat16 where chosen is really used, float32 otherwise (on CPU too)."""

import numpy as np
import pytest
import torch
from torch import nn

from traitpipe.models.device import resolve_precision
from traitpipe.models.training import predict, train_classifier

CPU = torch.device("cpu")


class Recorder(nn.Module):
    """A tiny classifier that records the dtype its linear layer computes in."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 3)
        self.dtypes = []

    def get_classifier(self):
        return self.head

    def forward(self, x):
        out = self.head(x.flatten(1))
        self.dtypes.append(out.dtype)
        return out


def test_auto_is_bfloat16_only_on_cuda():
    assert resolve_precision("auto", CPU) == "float32"
    assert resolve_precision("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_precision("bfloat16", CPU) == "bfloat16"
    with pytest.raises(ValueError, match="float16"):
        resolve_precision("float16", CPU)


@pytest.mark.parametrize("precision, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_classifier_training_and_prediction_run_in_the_chosen_precision(precision, dtype):
    model, images, labels = Recorder(), torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    train_classifier(model, images, labels, epochs=1, batch_size=3, lr=1e-3, weight_decay=0.0, linear_probe=False,
                     seed=0, device=CPU, progress=False, precision=precision)
    predict(model, images, 3, CPU, precision)
    assert set(model.dtypes) == {dtype}


@pytest.mark.parametrize("precision, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_phylo_codes_run_in_the_chosen_precision(precision, dtype):
    from traitpipe.phylo.model import Disentangler
    from traitpipe.phylo.training import generate_codes
    from traitpipe.phylo.vqgan import VQGAN

    torch.manual_seed(0)
    base = VQGAN(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=16, z_channels=16,
                 embed_dim=8, n_embed=16, groups=4)
    model = Disentangler(16, 8, [2, 3], ["05distance"], hidden=16, phylo_channels=8, code_dim=4, codes_per_level=2,
                         n_codes=16, nonphylo_levels=2)
    seen = []
    handle = next(m for m in base.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(
        lambda m, a, out: seen.append(out.dtype))
    generate_codes(base, model, torch.rand(2, 3, 16, 16), batch_size=2, device=CPU, precision=precision)
    handle.remove()
    assert seen and set(seen) == {dtype}


def test_sst_runs_in_float32_on_cpu_under_auto_and_in_bfloat16_when_chosen():
    from traitpipe.segment.sst import load_sam2, track

    torch.manual_seed(0)
    predictor = load_sam2("sam2.1_hiera_t", None, device="cpu", image_size=64)
    frames = [np.full((32, 32, 3), 90, np.uint8), np.full((32, 32, 3), 100, np.uint8)]
    labels = np.zeros((32, 32), np.uint8)
    labels[8:16, 8:16] = 1
    for precision, dtype in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        seen = []
        handle = predictor.sam_mask_decoder.register_forward_hook(lambda m, a, out: seen.append(out[0].dtype))
        list(track(predictor, frames, labels, precision=precision))
        handle.remove()
        assert seen and set(seen) == {dtype}, precision


