"""BertMLM: BERT's masked-LM architecture, built from this package's modules.

    ids [batch, seq] -> BertEmbeddings  LayerNorm(E[id] + T[type] + P[t])      [batch, seq, d_model]
                     -> Encoder         N post-norm layers:
                                          x = LayerNorm(x + dropout(Attention(x)))
                                          x = LayerNorm(x + dropout(W_2 GELU(x W_1 + b_1) + b_2))
                     -> MaskedLMHead    LayerNorm(GELU(h W_t + b_t)) E^T + b    [batch, seq, vocab]

What it changes from the seed ``TransformerMLM``: normalised embeddings with learned positions and
token types instead of ``E sqrt(d_model) + P``; post-norm instead of pre-norm (so no final
LayerNorm); no dropout between the feed-forward's two linear maps; a transform before the output
and a decoder tied to the token embeddings instead of one independent linear map; LayerNorm epsilon
as configured (BERT's 1e-12).

With the same weights it computes what Hugging Face's ``BertForMaskedLM`` computes (``scratchmlm.harness.hf``
converts between the two; ``tests/test_hf.py`` holds the logits and gradients equal).

Initialisation (BERT's): every linear weight and embedding table ~ N(0, init_std^2), the ``[PAD]``
row zero, biases zero, LayerNorms at (1, 0).
"""

import torch
from torch import nn

from .bert_embeddings import BertEmbeddings
from .encoder import Encoder
from .mlm import check_model_arguments
from .prediction_head import MaskedLMHead


class BertMLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 128, num_heads: int = 8, num_layers: int = 6,
                 d_ff: int = 256, max_len: int = 32, dropout: float = 0.1, activation: str = "gelu",
                 init_std: float = 0.02, layer_norm_eps: float = 1e-12, type_vocab_size: int = 2,
                 padding_id: int = 0):
        super().__init__()
        check_model_arguments(init_std, vocab_size=vocab_size, d_model=d_model, num_heads=num_heads,
                              num_layers=num_layers, d_ff=d_ff, max_len=max_len, type_vocab_size=type_vocab_size)
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embeddings = BertEmbeddings(vocab_size, d_model, max_len, dropout, layer_norm_eps, type_vocab_size,
                                         padding_id, init_std)
        self.encoder = Encoder(num_layers, d_model, num_heads, d_ff, dropout, norm_first=False,
                               activation=activation, layer_norm_eps=layer_norm_eps,
                               dropout_inside_feed_forward=False)
        self.head = MaskedLMHead(d_model, vocab_size, activation, layer_norm_eps)
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
                return_attention: bool = False, token_type_ids: torch.Tensor | None = None):
        """ids ``[batch, seq]`` -> logits ``[batch, seq, vocab]`` (plus per-layer attention
        weights ``[batch, heads, seq, seq]`` when ``return_attention``). ``key_padding_mask``
        ``[batch, seq]`` is True at padding; ``token_type_ids`` ``[batch, seq]`` default to 0."""
        x = self.embeddings(ids, token_type_ids)
        token_embeddings = self.embeddings.token.weight
        if return_attention:
            hidden, weights = self.encoder(x, key_padding_mask, return_weights=True)
            return self.head(hidden, token_embeddings), weights
        return self.head(self.encoder(x, key_padding_mask), token_embeddings)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
