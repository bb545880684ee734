"""scratchmlm: a from-scratch, pure-PyTorch BERT-style masked language model to learn from.

Data flows one way: corpus -> tokenizer -> batches -> masker -> model -> loss -> training step.
"""

from .batches import FrozenValidationSet, evenly_spaced_windows, fingerprint, random_windows
from .config import ModelConfig, RunConfig, TrainConfig
from .corpus import load_text, read_text, split_text, tiny_shakespeare_path
from .errors import ScratchMLMError
from .evaluate import EvalResult, eval_mode, evaluate
from .export import export_run, load_pretrained
from .masking import IGNORE_INDEX, BertMasker, MaskedBatch
from .model import (BertMLM, Dropout, Embeddings, Encoder, EncoderLayer, FeedForward, Generator,
                    MultiHeadAttention, TransformerMLM)
from .noam import NoamScheduler, noam_lr
from .run_dir import load_run
from .sample import fill_mask, fill_prompts
from .step import StepResult, masked_cross_entropy, train_step
from .tokenizer import CharTokenizer
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "ScratchMLMError",
    "load_text", "read_text", "split_text", "tiny_shakespeare_path",
    "CharTokenizer",
    "random_windows", "evenly_spaced_windows", "FrozenValidationSet", "fingerprint",
    "BertMasker", "MaskedBatch", "IGNORE_INDEX",
    "Dropout", "Embeddings", "MultiHeadAttention", "FeedForward", "EncoderLayer", "Encoder", "Generator",
    "TransformerMLM", "BertMLM",
    "noam_lr", "NoamScheduler",
    "masked_cross_entropy", "train_step", "StepResult", "Trainer",
    "evaluate", "EvalResult", "eval_mode", "fill_mask", "fill_prompts", "load_run",
    "export_run", "load_pretrained",
    "ModelConfig", "TrainConfig", "RunConfig",
]
