"""Write ``reference.pt``: a tiny INTR head run by the INTR authors' own code, for tests/test_intr.py.

Usage: python tests/data/intr/make_reference.py PATH_TO_INTR_CHECKOUT

PATH_TO_INTR_CHECKOUT is a copy of github.com/Imageomics/INTR (read at commit 69b8a69, 2024-04-15). Their
``Transformer`` (models/transformer.py, post-norm, return_intermediate_dec=True as their build_transformer) and
``PositionEmbeddingSine(d_model // 2, normalize=True)`` (models/position_encoding.py) run on a random
backbone feature map exactly as their ``INTR.forward`` runs them; their backbone (a torchvision ResNet with
frozen batch norm) is left out, its names are tested against torchvision's ResNet instead. The file holds the
weights under their state-dict names, the feature map, the logits and the last decoder layer's per-head
cross-attention. Nothing of their code is stored here.
"""

import sys
from pathlib import Path

import torch
from torch import nn

SIZES = {"d_model": 16, "nheads": 2, "enc_layers": 2, "dec_layers": 2, "dim_feedforward": 32, "classes": 5,
         "channels": 8, "height": 3, "width": 4, "batch": 2}


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    from models.position_encoding import PositionEmbeddingSine
    from models.transformer import Transformer
    from util.misc import NestedTensor

    torch.manual_seed(0)
    s = SIZES
    transformer = Transformer(d_model=s["d_model"], nhead=s["nheads"], num_encoder_layers=s["enc_layers"],
                              num_decoder_layers=s["dec_layers"], dim_feedforward=s["dim_feedforward"],
                              dropout=0.1, normalize_before=False, return_intermediate_dec=True)
    head = nn.ModuleDict({"transformer": transformer, "presence_vector": nn.Linear(s["d_model"], 1),
                          "query_embed": nn.Embedding(s["classes"], s["d_model"]),
                          "input_proj": nn.Conv2d(s["channels"], s["d_model"], kernel_size=1)}).eval()
    features = torch.randn(s["batch"], s["channels"], s["height"], s["width"])
    mask = torch.zeros(s["batch"], s["height"], s["width"], dtype=torch.bool)
    pos = PositionEmbeddingSine(s["d_model"] // 2, normalize=True)(NestedTensor(features, mask))
    with torch.no_grad():  # INTR.forward after the backbone
        hs, _, attention, _ = transformer(head["input_proj"](features), mask, head["query_embed"].weight, pos)
        logits = head["presence_vector"](hs[-1]).squeeze(dim=-1)
    torch.save({"sizes": s, "state": head.state_dict(), "features": features, "logits": logits,
                "attention": attention[-1]}, Path(__file__).with_name("reference.pt"))


if __name__ == "__main__":
    main()
