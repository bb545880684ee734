"""BERT's embeddings: token + token type + learned position, then a LayerNorm.

    x[b, t] = LayerNorm(E[ids[b, t]] + T[types[b, t]] + P[t])            -> [batch, seq, d_model]

Three learned tables, all initialised N(0, init_std^2): ``E`` the tokens ``[vocab, d_model]``,
``T`` the token types ``[type_vocab, d_model]`` (segment A = 0 / segment B = 1 of a sentence pair;
a single text is all type 0) and ``P`` the positions ``[max_len, d_model]``.

Unlike the seed model's ``Embeddings`` there is no ``sqrt(d_model)`` scale: the LayerNorm sets each
vector's scale (mean 0, variance 1, then its own gain and bias), whatever the tables hold.

The ``[PAD]`` row of ``E`` starts at zero and is never changed by looking it up (``padding_idx``):
padding contributes nothing through the input. (With the decoder tied to ``E`` it still gets a
gradient from the output side.)
"""

import torch
from torch import nn

from .dropout import Dropout


class BertEmbeddings(nn.Module):
    """ids ``[batch, seq]`` (and token types ``[batch, seq]``) -> vectors ``[batch, seq, d_model]``."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12, type_vocab_size: int = 2, padding_id: int = 0,
                 init_std: float = 0.02):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.token = nn.Embedding(vocab_size, d_model, padding_idx=padding_id)
        self.token_type = nn.Embedding(type_vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        for table in (self.token, self.token_type, self.position):
            nn.init.normal_(table.weight, std=init_std)
        with torch.no_grad():
            self.token.weight[padding_id].zero_()
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = Dropout(dropout)

    def forward(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"ids must be an integer tensor [batch, seq], got {ids.dtype} {list(ids.shape)}")
        seq_len = ids.shape[1]
        if seq_len > self.max_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_len {self.max_len} of the position table")
        if ids.device.type == "cpu" and ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < self.vocab_size:
            raise ValueError(f"ids must lie in 0..{self.vocab_size - 1} (the vocabulary), got "
                             f"{int(ids.min())}..{int(ids.max())}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(ids)
        positions = torch.arange(seq_len, device=ids.device)
        x = self.token(ids) + self.token_type(token_type_ids) + self.position(positions)
        return self.dropout(self.norm(x))
