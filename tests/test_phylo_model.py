import pytest
import torch

from traitpipe.phylo.model import Disentangler, head_name, level_positions, split_authors_state
from traitpipe.phylo.quantize import VectorQuantizer
from traitpipe.phylo.training import (adversarial_uncertainty, adversary_confidence, generate_codes, train_base,
                                      train_disentangler)
from traitpipe.phylo.vqgan import VQGAN

CPU = torch.device("cpu")
GROUPS = [2, 3, 4]
NAMES = [head_name(0.33), head_name(0.5)]


def _models(nonphylo_levels=3):
    torch.manual_seed(0)
    base = VQGAN(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16, z_channels=16,
                 embed_dim=8, n_embed=16, groups=8)
    model = Disentangler(16, 8, GROUPS, NAMES, hidden=16, phylo_channels=8, code_dim=4, codes_per_level=2,
                         n_codes=16, nonphylo_levels=nonphylo_levels)
    return base, model


def test_shapes_and_code_order():
    base, model = _models(nonphylo_levels=5)
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    h = base.encode(images)
    assert h.shape == (5, 16, 8, 8)
    out = model(h)
    assert out.phylo_codes.shape == (5, 2 * 3) and out.nonphylo_codes.shape == (5, 2 * 5)  # its own levels
    assert out.phylo.shape == (5, 4, 2, 3) and out.reconstruction.shape == h.shape
    assert [logits.shape[1] for logits in out.level_logits] == GROUPS
    # code k = levels * position + level: the codes of level 0 are at 0, 3; of levels 0..1 at 0, 1, 3, 4
    assert level_positions(3, 2, 0).tolist() == [0, 3] and level_positions(3, 2, 1).tolist() == [0, 1, 3, 4]
    vectors = out.phylo.permute(0, 2, 3, 1).reshape(5, 6, 4)  # (B, position * level, dim)
    torch.testing.assert_close(vectors, model.quantize.embedding(out.phylo_codes))


def test_the_output_conv_is_preceded_by_a_silu():
    _, model = _models()
    rebuilt = torch.randn(2, 16, 8, 8)
    conv = model.conv_out[1]
    torch.testing.assert_close(model.conv_out(rebuilt), conv(torch.nn.functional.silu(rebuilt)))
    assert not torch.allclose(model.conv_out(rebuilt), conv(rebuilt))


def test_the_authors_state_dict_names_load():
    """A state dict in the authors' layout (PhyloVQVAE: taming VQGAN + phylo_disentangler) at reduced width."""
    base, model = _models()
    names = {f"phylo_disentangler.{k}" for k in model.state_dict()} | set(base.state_dict())
    for key in ("encoder.conv_in.weight", "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down.0.downsample.conv.weight",
                "encoder.mid.attn_1.q.weight", "decoder.up.1.upsample.conv.weight", "decoder.up.0.block.1.norm1.weight",
                "quantize.embedding.weight", "quant_conv.weight", "post_quant_conv.bias",
                "phylo_disentangler.conv_in.0.weight", "phylo_disentangler.mlp_in.0.weight",
                "phylo_disentangler.mlp_in.2.weight", "phylo_disentangler.mlp_out.1.weight",
                "phylo_disentangler.mlp_in_non_attribute.2.weight", "phylo_disentangler.mlp_out_non_attribute.1.bias",
                "phylo_disentangler.quantize.embedding.weight", "phylo_disentangler.conv_out.1.weight",
                "phylo_disentangler.classification_layers.class.seq.1.weight",
                "phylo_disentangler.classification_layers.033distance.seq.1.weight",
                "phylo_disentangler.classification_layers.05distance.seq.1.bias",
                "phylo_disentangler.codebook_mapping_layers.1.weight"):
        assert key in names, key
    torch.manual_seed(1)
    authors = {k: torch.randn_like(v) for k, v in base.state_dict().items()}
    authors.update({f"phylo_disentangler.{k}": torch.randn_like(v) for k, v in model.state_dict().items()})
    authors["phylo_disentangler.loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1)  # unused LPIPS
    authors["loss.discriminator.main.0.weight"] = torch.zeros(1)
    base_state, disentangler_state = split_authors_state(authors)
    fresh_base, fresh = _models()
    fresh_base.load_state_dict(base_state)  # strict: every name matches, nothing left over
    fresh.load_state_dict(disentangler_state)
    torch.testing.assert_close(fresh.conv_out[1].weight, authors["phylo_disentangler.conv_out.1.weight"])
    torch.testing.assert_close(fresh_base.decoder.up[0].block[1].norm1.weight,
                               authors["decoder.up.0.block.1.norm1.weight"])


def test_the_fish_model_shapes():
    """The authors' fish VQGAN: 256x256 -> 16x16 latent, attention at 16 only, their key count."""
    with torch.device("meta"):
        base = VQGAN()
    assert base.feature_size == 16 and len(base.state_dict()) == 343
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    assert shapes["encoder.down.4.block.0.nin_shortcut.weight"] == (512, 256, 1, 1)
    assert shapes["decoder.up.1.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert "encoder.down.4.attn.1.q.weight" in shapes and "encoder.down.3.attn.0.q.weight" not in shapes
    assert "encoder.down.4.downsample.conv.weight" not in shapes and "decoder.up.0.upsample.conv.weight" not in shapes
    assert shapes["quantize.embedding.weight"] == (1024, 256) and shapes["encoder.conv_out.weight"] == (256, 512, 3, 3)


def test_quantizer_picks_the_nearest_code_and_weights_as_the_authors():
    quantizer = VectorQuantizer(3, 2)
    quantizer.embedding.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    z = torch.tensor([[0.9, 1.2], [4.0, 6.0]], requires_grad=True)
    quantised, indices, loss = quantizer(z)
    assert indices.tolist() == [1, 2] and quantised.tolist() == [[1.0, 1.0], [5.0, 5.0]]
    (quantised.sum() + loss).backward()
    # straight through (1) plus the commitment term at weight 1: 2 (z - q) / 4
    torch.testing.assert_close(z.grad, 1 + torch.tensor([[-0.05, 0.1], [-0.5, 0.5]]))
    # the codebook term at weight beta = 0.25: 0.25 * 2 (q - z) / 4
    torch.testing.assert_close(quantizer.embedding.weight.grad[1:], torch.tensor([[0.0125, -0.025], [0.125, -0.125]]))


def test_the_adversary_sends_no_gradient_to_the_encoder_side():
    base, model = _models()
    out = model(base.encode(torch.rand(4, 3, 16, 16) * 2 - 1))
    names = [name for name, _ in model.named_parameters()]
    grads = torch.autograd.grad(adversarial_uncertainty(model, out.nonphylo), list(model.parameters()),
                                allow_unused=True)
    reached = {name for name, grad in zip(names, grads) if grad is not None and grad.abs().sum() > 0}
    assert reached == {"classification_layers.class.seq.1.weight", "classification_layers.class.seq.1.bias"}
    grads = torch.autograd.grad(adversary_confidence(model, out.nonphylo), list(model.parameters()),
                                allow_unused=True)
    reached = {name for name, grad in zip(names, grads) if grad is not None and grad.abs().sum() > 0}
    # the graph reaches the head too, but train_disentangler steps the mapping alone (the head stays frozen)
    assert {n for n in reached if not n.startswith("classification_layers.class.")} == {
        "codebook_mapping_layers.1.weight", "codebook_mapping_layers.1.bias"}


def test_training_learns_the_levels():
    base, model = _models()
    labels = torch.arange(4).repeat(6)
    colour = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])[labels][:, :, None, None]  # one per species
    images = (colour + 0.05 * torch.randn(24, 3, 16, 16)) * 2 - 1
    targets = torch.stack([labels // 2, labels % 3, labels], 1)
    base_history = train_base(base, images, epochs=5, batch_size=8, lr=3e-3, seed=0, device=CPU, progress=False)
    assert base_history[-1] < base_history[0]
    orthogonality = model.orthogonality().item()
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    # 40 epochs: at 25 one level stopped at 0.75 with one torch thread (1.0 with two); at 40 every level is
    # learnt with either, and on four other draws of the images and seeds
    history = train_disentangler(base, model, images, targets, epochs=40, batch_size=8, lr=3e-3, seed=0,
                                 device=CPU, progress=False)
    assert history[-1] < history[0] and model.orthogonality().item() < orthogonality
    codes = generate_codes(base, model, images, batch_size=10, device=CPU)
    assert codes["phylo"].shape == (24, 6) and codes["reconstruction_error"].shape == (24,)
    accuracy = [(logits.argmax(1) == targets[:, k]).float().mean().item() for k, logits in
                enumerate(codes["level_logits"])]
    assert min(accuracy) > 0.9, accuracy  # chance: 0.5, 0.33, 0.25
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in frozen.items())  # the base stayed frozen


def test_level_names_must_match_the_levels():
    with pytest.raises(ValueError, match="3 levels need 2 level names, got 1"):
        Disentangler(16, 8, GROUPS, ["033distance"])
