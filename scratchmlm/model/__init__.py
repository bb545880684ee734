"""The encoder-only transformer, written out in plain ``torch.nn``.

``TransformerMLM`` = ``Embeddings`` -> ``Encoder`` (N x ``EncoderLayer`` = ``MultiHeadAttention`` +
``FeedForward``) -> ``Generator``. Nothing here imports from outside this package.
"""

from .attention import MultiHeadAttention
from .dropout import Dropout
from .embeddings import Embeddings, sinusoidal_positions
from .encoder import Encoder, EncoderLayer
from .feed_forward import FeedForward
from .generator import Generator
from .mlm import TransformerMLM

__all__ = ["Dropout", "Embeddings", "sinusoidal_positions", "MultiHeadAttention", "FeedForward",
           "EncoderLayer", "Encoder", "Generator", "TransformerMLM"]
