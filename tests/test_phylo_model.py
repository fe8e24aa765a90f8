import torch

from traitpipe.phylo.model import Disentangler, VectorQuantizer, VQAutoencoder, level_positions
from traitpipe.phylo.training import generate_codes, train_base, train_disentangler

CPU = torch.device("cpu")
GROUPS = [2, 3, 4]


def _models():
    torch.manual_seed(0)
    base = VQAutoencoder(channels=8, downsample=1, z_channels=16, n_codes=16)
    model = Disentangler(16, 8, GROUPS, hidden=16, phylo_channels=8, code_dim=4, codes_per_level=2, n_codes=16)
    return base, model


def test_shapes_and_code_order():
    base, model = _models()
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    h = base.encode(images)
    assert h.shape == (5, 16, 8, 8)
    out = model(h)
    assert out.phylo_codes.shape == out.nonphylo_codes.shape == (5, 2 * 3)
    assert out.phylo.shape == (5, 4, 2, 3) and out.reconstruction.shape == h.shape
    assert [logits.shape[1] for logits in out.level_logits] == GROUPS
    # code k = levels * position + level: the codes of level 0 are at 0, 3; of levels 0..1 at 0, 1, 3, 4
    assert level_positions(3, 2, 0).tolist() == [0, 3] and level_positions(3, 2, 1).tolist() == [0, 1, 3, 4]
    vectors = out.phylo.permute(0, 2, 3, 1).reshape(5, 6, 4)  # (B, position * level, dim)
    torch.testing.assert_close(vectors, model.quantizer.codebook(out.phylo_codes))


def test_quantizer_picks_the_nearest_code_and_passes_gradients():
    quantizer = VectorQuantizer(3, 2)
    quantizer.codebook.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    z = torch.tensor([[0.9, 1.2], [4.0, 6.0]], requires_grad=True)
    quantised, indices, loss = quantizer(z)
    assert indices.tolist() == [1, 2] and quantised.tolist() == [[1.0, 1.0], [5.0, 5.0]]
    quantised.sum().backward()
    assert z.grad.tolist() == [[1.0, 1.0], [1.0, 1.0]] and loss > 0  # straight through


def test_training_learns_the_levels():
    base, model = _models()
    labels = torch.arange(4).repeat(6)
    colour = torch.nn.functional.one_hot(labels % 3, 3).float()[:, :, None, None]
    images = (colour + 0.05 * torch.randn(24, 3, 16, 16)) * 2 - 1
    targets = torch.stack([labels // 2, labels % 3, labels], 1)
    base_history = train_base(base, images, epochs=5, batch_size=8, lr=3e-3, seed=0, device=CPU, progress=False)
    assert base_history[-1] < base_history[0]
    orthogonality = model.orthogonality().item()
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    history = train_disentangler(base, model, images, targets, epochs=25, batch_size=8, lr=3e-3, seed=0,
                                 device=CPU, progress=False)
    assert history[-1] < history[0] and model.orthogonality().item() < orthogonality
    codes = generate_codes(base, model, images, batch_size=10, device=CPU)
    assert codes["phylo"].shape == (24, 6) and codes["reconstruction_error"].shape == (24,)
    accuracy = [(logits.argmax(1) == targets[:, k]).float().mean().item() for k, logits in
                enumerate(codes["level_logits"])]
    assert min(accuracy) > 0.6, accuracy
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in frozen.items())  # the base stayed frozen
