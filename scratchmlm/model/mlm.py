"""TransformerMLM = Embeddings -> Encoder -> Generator.

    ids [batch, seq] -> embeddings [batch, seq, d_model] -> encoder [batch, seq, d_model]
                     -> logits [batch, seq, vocab]

Initialisation: every linear weight ~ N(0, 0.02^2) with zero bias (BERT / GPT-2), LayerNorms at
(1, 0), token embeddings as described in ``embeddings.py``.
"""

import torch
from torch import nn

from .embeddings import Embeddings
from .encoder import Encoder
from .generator import Generator


def check_model_arguments(init_std: float, **sizes: int) -> None:
    """Every size (``d_model=128``, ...) a positive integer and ``init_std`` > 0, or a one-line
    ``ValueError`` naming the argument. The models check their arguments with it, and so does the
    configuration (``harness/config.py``), so the rule and its message live here only."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std!r}.")


class TransformerMLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 128, num_heads: int = 8, num_layers: int = 6,
                 d_ff: int = 256, max_len: int = 32, dropout: float = 0.1, norm_first: bool = True,
                 activation: str = "gelu", positional: str = "sinusoidal", init_std: float = 0.02,
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        check_model_arguments(init_std, vocab_size=vocab_size, d_model=d_model, num_heads=num_heads,
                              num_layers=num_layers, d_ff=d_ff, max_len=max_len)
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embeddings = Embeddings(vocab_size, d_model, max_len, positional, dropout)
        self.encoder = Encoder(num_layers, d_model, num_heads, d_ff, dropout, norm_first, activation, layer_norm_eps)
        self.generator = Generator(d_model, vocab_size)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)

    def set_fused_attention(self, fused: bool) -> None:
        """Use torch's fused attention kernel (same math, faster) in every layer, or not."""
        for module in self.modules():
            if hasattr(module, "fused"):
                module.fused = fused

    def forward(self, ids: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                return_attention: bool = False):
        """ids ``[batch, seq]`` -> logits ``[batch, seq, vocab]`` (plus per-layer attention
        weights ``[batch, heads, seq, seq]`` when ``return_attention``)."""
        x = self.embeddings(ids)
        if return_attention:
            hidden, weights = self.encoder(x, key_padding_mask, return_weights=True)
            return self.generator(hidden), weights
        return self.generator(self.encoder(x, key_padding_mask))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
