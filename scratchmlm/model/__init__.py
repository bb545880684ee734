"""The encoder-only transformer, written out in plain ``torch.nn``.

``TransformerMLM`` = ``Embeddings`` -> ``Encoder`` (N x ``EncoderLayer`` = ``MultiHeadAttention`` +
``FeedForward``) -> ``Generator``. ``BertMLM`` = ``BertEmbeddings`` -> ``Encoder`` (post-norm) ->
``MaskedLMHead``: BERT's masked-LM architecture. Nothing here imports from outside this package.
"""

from .attention import MultiHeadAttention
from .bert import BertMLM
from .bert_embeddings import BertEmbeddings
from .dropout import Dropout
from .embeddings import Embeddings, sinusoidal_positions
from .encoder import Encoder, EncoderLayer
from .feed_forward import FeedForward
from .generator import Generator
from .mlm import TransformerMLM
from .prediction_head import MaskedLMHead

__all__ = ["Dropout", "Embeddings", "sinusoidal_positions", "MultiHeadAttention", "FeedForward",
           "EncoderLayer", "Encoder", "Generator", "TransformerMLM",
           "BertEmbeddings", "MaskedLMHead", "BertMLM"]
