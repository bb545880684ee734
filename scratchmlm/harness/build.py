"""From a configuration to the objects a run needs: the device, the seeds, the data and the model.

Data flows one way, and ``RunData.prepare`` follows it:

    text -> split at int(0.9 * len) -> tokenizer -> train ids / valid ids -> masker
         -> frozen validation set (fixed windows, fixed masks, sha256 fingerprint)

The tokenizer is a ``CharTokenizer`` (the alphabet of the whole text) or a ``SubwordTokenizer``
learned from the training split alone; the masker is BERT's, whole-word or span
(``--tokenizer``, ``--masking``).

One ``seed`` gives four independent seeds (initialisation, batches, masking, dropout), so a run
is reproducible and changing, say, the batch order leaves the initial weights alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..batches import FrozenValidationSet
from ..corpus import load_text, split_text
from ..errors import ScratchMLMError
from ..evaluate import EvalResult, bigram_infill_baseline, unigram_baseline
from ..files import regular_file
from ..masking import BertMasker, SpanMasker, WholeWordMasker
from ..model import BertMLM, TransformerMLM
from ..subword_tokenizer import DEFAULT_VOCAB_SIZE, SubwordTokenizer
from ..tokenizer import CharTokenizer
from .config import ModelConfig, TrainConfig


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` (a CUDA GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    In a multi-process run (``local_rank`` given), ``auto`` and ``cuda`` mean this process's own
    GPU, ``cuda:LOCAL_RANK``.
    """
    if local_rank is not None and (name == "cuda" or name == "auto" and torch.cuda.is_available()):
        name = f"cuda:{local_rank}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScratchMLMError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise ScratchMLMError(f"Unsupported device {name!r}: use auto, cpu, cuda or cuda:N.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScratchMLMError(f"--device {name} was asked for, but PyTorch sees no CUDA GPU here; "
                              f"use --device cpu (or auto).")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ScratchMLMError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA GPU(s).")
    return device


def derive_seeds(seed: int, rank: int = 0) -> dict[str, int]:
    """Independent seeds for initialisation, batches, masking and dropout, from one ``seed``.

    Rank ``r > 0`` of a multi-process run draws its batches, masks and dropout from the child
    sequence ``SeedSequence(seed, spawn_key=(r,))``, independent of every other rank's; the
    initialisation seed is the same on every rank (all start from the same weights). Rank 0's
    seeds are a single-process run's.
    """
    def four(sequence):
        return [int(x >> np.uint64(1)) for x in sequence.generate_state(4, dtype=np.uint64)]

    init, batches, masking, dropout = four(np.random.SeedSequence(seed))
    if rank > 0:
        _, batches, masking, dropout = four(np.random.SeedSequence(seed, spawn_key=(rank,)))
    return {"init": init, "batches": batches, "masking": masking, "dropout": dropout}


REFERENCE_BATCH = 64    # the seed configuration's batch, for which the Noam factor is tuned


def lr_scale(train_config: TrainConfig, world_size: int = 1) -> float:
    """How much a large global batch raises the Noam factor (``--lr-scaling``).

    With a global batch ``B = batch_size x world_size``, ``k = B / 64`` times the seed batch:
    ``sqrt`` multiplies the learning rate by ``k ** 0.5`` (the gradient's noise falls as
    ``1 / sqrt(B)``; the usual rule for Adam), ``linear`` by ``k`` (the rule for SGD), ``none`` by 1.
    """
    k = train_config.batch_size * world_size / REFERENCE_BATCH
    return {"none": 1.0, "sqrt": k ** 0.5, "linear": k}[train_config.lr_scaling]


def make_optimizer(parameters, train_config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW with the run's betas, epsilon and weight decay; the Noam schedule sets its lr.

    ``fused=True`` runs torch's single-kernel implementation of the same update: one call per step
    for all parameters instead of a Python loop of about ten tensor operations per parameter (a
    test holds it equal to the loop). Parameters on a device without a fused kernel use the loop.
    """
    parameters = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[train_config.optimizer]
    return optimizer(parameters, lr=0.0, betas=(train_config.adam_beta1, train_config.adam_beta2),
                     eps=train_config.adam_eps, weight_decay=train_config.weight_decay, fused=fused or None)


def build_model(model_config: ModelConfig, seed: int) -> TransformerMLM | BertMLM:
    """A freshly initialised model, the ``TransformerMLM`` or the ``BertMLM`` that
    ``model_config.architecture`` names; the global RNG is untouched (initialisation uses a fork)."""
    model_config.validate()
    settings = dict(vars(model_config))
    architecture = settings.pop("architecture")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if architecture == "bert":       # always post-norm with learned positions (validate checks)
            del settings["norm_first"], settings["positional"]
            return BertMLM(**settings)
        return TransformerMLM(**settings)


def parameter_count(model_config: ModelConfig) -> int:
    """The number of weights a model of ``model_config`` has (about: biases and norms summed roughly)."""
    m = model_config
    d, layers = m.d_model, m.num_layers
    return m.vocab_size * d + m.max_len * d + layers * (4 * d * d + 2 * d * m.d_ff + 10 * d) + d * m.vocab_size


# Python's own objects per encoder layer (modules, parameters, their dicts), beside the weights.
LAYER_OVERHEAD_BYTES = 64 * 1024


def training_memory_bytes(model_config: ModelConfig, train_config: TrainConfig) -> int:
    """A rough upper estimate of the memory one training step needs, in bytes (float32).

    Parameters, gradients and Adam's two moments: ``4 x params``. Activations kept for the
    backward pass, per token and layer: about 16 vectors of ``d_model``, 3 of ``d_ff`` and 3
    attention rows of ``heads x seq``; plus the logits (3 copies of ``vocab``).
    """
    m, t = model_config, train_config
    d, layers = m.d_model, m.num_layers
    per_token = layers * (16 * d + 3 * m.d_ff + 3 * m.num_heads * t.seq_len) + 3 * m.vocab_size
    evaluation = t.valid_windows * t.seq_len * 4      # the frozen set's inputs, labels, kinds
    return (4 * (4 * parameter_count(m) + t.batch_size * t.seq_len * per_token) + 8 * evaluation
            + layers * LAYER_OVERHEAD_BYTES)


def model_memory_bytes(model_config: ModelConfig) -> int:
    """What building a model takes, in bytes: its float32 weights (built, then loaded: twice) and
    the Python objects of its layers."""
    return 2 * 4 * parameter_count(model_config) + model_config.num_layers * LAYER_OVERHEAD_BYTES


def _memory_available() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):   # not every platform reports it
        return None


def check_memory(model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Refuse sizes that cannot fit in this machine's memory, before anything is allocated."""
    needed, available = training_memory_bytes(model_config, train_config), _memory_available()
    if available is not None and needed > available:
        raise ScratchMLMError(
            f"This configuration needs about {needed / 2 ** 30:,.1f} GiB to train, more than this "
            f"machine's {available / 2 ** 30:,.1f} GiB: lower --batch-size, --seq-len, --d-model, "
            f"--d-ff, --num-layers or --valid-windows.")


def check_model_memory(model_config: ModelConfig, where) -> None:
    """Refuse to build a stored model (``where``: its config.json) that cannot fit in this machine's
    memory, before anything is allocated: a damaged or hostile file could ask for any size."""
    needed, available = model_memory_bytes(model_config), _memory_available()
    if available is not None and needed > available:
        m = model_config
        raise ScratchMLMError(
            f"{where} describes a model (d_model {m.d_model}, d_ff {m.d_ff}, {m.num_layers} layers, vocab_size "
            f"{m.vocab_size}) that needs about {needed / 2 ** 30:,.3g} GiB, more than this machine's "
            f"{available / 2 ** 30:,.1f} GiB; the file is damaged, or load the model on a larger machine.")


def make_tokenizer(train_config: TrainConfig, text: str, train_text: str):
    """The vocabulary ``--tokenizer`` asks for: the characters of ``text``, or BPE / WordPiece
    subwords learned from ``train_text`` (the training split) with ``--vocab-size`` ids."""
    if train_config.tokenizer == "char":
        return CharTokenizer.from_text(text)
    return SubwordTokenizer.train(train_text, train_config.tokenizer, train_config.vocab_size or DEFAULT_VOCAB_SIZE)


def make_masker(tokenizer, train_config: TrainConfig) -> BertMasker:
    """The masker ``--masking`` asks for (``bert``, ``whole-word`` or ``span``), with the run's
    probabilities, for ``tokenizer``."""
    probabilities = dict(select_prob=train_config.select_prob, mask_token_prob=train_config.mask_token_prob,
                         random_token_prob=train_config.random_token_prob)
    if train_config.masking == "whole-word":
        return WholeWordMasker.for_tokenizer(tokenizer, **probabilities)
    if train_config.masking == "span":
        return SpanMasker.for_tokenizer(tokenizer, span_mean=train_config.span_mean, **probabilities)
    return BertMasker.for_tokenizer(tokenizer, **probabilities)


@dataclass
class RunData:
    """Everything a run derives from its text: tokenizer, token streams, masker, validation set."""

    tokenizer: CharTokenizer | SubwordTokenizer
    train_ids: torch.Tensor
    valid_text: str
    masker: BertMasker
    valid: FrozenValidationSet

    @classmethod
    def prepare(cls, train_config: TrainConfig, text: str | None = None,
                tokenizer: CharTokenizer | SubwordTokenizer | None = None) -> "RunData":
        """Load ``train_config.data`` (unless ``text`` is given) and derive everything from it.

        A given ``tokenizer`` (a trained run's) is used as it is; otherwise ``make_tokenizer``
        builds the one the configuration asks for.
        """
        text = load_text(train_config.data) if text is None else text
        split = split_text(text, min_length=train_config.seq_len)
        tokenizer = tokenizer or make_tokenizer(train_config, text, split.train)
        train_ids = tokenizer.encode(split.train, parse_special=False)
        valid_ids = tokenizer.encode(split.valid, parse_special=False)
        for name, ids in (("training", train_ids), ("validation", valid_ids)):
            if len(ids) < train_config.seq_len:
                raise ScratchMLMError(f"The {name} split is {len(ids)} tokens long, shorter than one window of "
                                      f"--seq-len {train_config.seq_len}; use a longer text or a shorter --seq-len.")
        masker = make_masker(tokenizer, train_config)
        valid = FrozenValidationSet.build(valid_ids, masker, train_config.seq_len, train_config.valid_windows)
        if not bool(valid.batch.selected.any()):
            raise ScratchMLMError(f"The validation set ({len(valid)} windows x {train_config.seq_len}) has no "
                                  f"selected position to score; raise --valid-windows or --select-prob.")
        return cls(tokenizer, train_ids, split.valid, masker, valid)

    def baselines(self) -> list[EvalResult]:
        """The bigram-infill and unigram baselines, scored on the same frozen masks as the model."""
        vocab = self.tokenizer.vocab_size
        return [bigram_infill_baseline(self.train_ids, self.valid, vocab, self.tokenizer.mask_id),
                unigram_baseline(self.train_ids, self.valid, vocab)]


def load_tokenizer(path: str | Path):
    """The tokenizer a run stored in ``tokenizer.json``: a ``CharTokenizer`` (WordLevel model) or a
    ``SubwordTokenizer`` (BPE or WordPiece model)."""
    path = Path(path)
    if path.exists() and not path.is_file():     # a FIFO would block the read below forever
        regular_file(path, "tokenizer file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return CharTokenizer.load(path)        # which names exactly what is wrong with the file
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict) and model.get("type") in ("BPE", "WordPiece"):
        return SubwordTokenizer.from_json(path.read_text(encoding="utf-8"), path)
    return CharTokenizer.load(path)
