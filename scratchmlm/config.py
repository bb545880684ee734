"""The two configurations, as plain dataclasses with the seed defaults, and their JSON round trip.

``ModelConfig`` describes the network; ``TrainConfig`` everything about a training run (data,
masking, optimiser, schedule, logging). A run directory stores both in ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ScratchMLMError


@dataclass
class ModelConfig:
    vocab_size: int = 68            # set from the tokenizer; 68 for Tiny Shakespeare (65 chars + 3)
    d_model: int = 128
    num_heads: int = 8
    num_layers: int = 6
    d_ff: int = 256
    max_len: int = 32               # longest sequence the position table covers
    dropout: float = 0.1
    norm_first: bool = True         # pre-norm; False gives the original post-norm
    activation: str = "gelu"        # or "relu"
    positional: str = "sinusoidal"  # or "learned"
    init_std: float = 0.02

    def validate(self) -> "ModelConfig":
        positive = ("vocab_size", "d_model", "num_heads", "num_layers", "d_ff", "max_len")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ScratchMLMError(f"{name} must be a positive integer, got {value!r}.")
        if self.d_model % self.num_heads:
            raise ScratchMLMError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads}): each head "
                f"gets d_model / num_heads dimensions. Try --num-heads "
                f"{max(h for h in range(1, self.num_heads + 1) if self.d_model % h == 0)}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ScratchMLMError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.activation not in ("gelu", "relu"):
            raise ScratchMLMError(f"activation must be 'gelu' or 'relu', got {self.activation!r}.")
        if self.positional not in ("sinusoidal", "learned"):
            raise ScratchMLMError(f"positional must be 'sinusoidal' or 'learned', got {self.positional!r}.")
        return self


@dataclass
class TrainConfig:
    data: str = "tinyshakespeare"   # the corpus name, or a path to any UTF-8 text file
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda
    steps: int = 6000
    batch_size: int = 64
    seq_len: int = 32
    # masking
    select_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    # optimiser and schedule
    noam_factor: float = 1.0
    warmup: int = 2000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    # speed
    fused_attention: bool = False   # True: torch's fused kernel, same math (slower on CPU with dropout)
    # logging, evaluation, checkpoints
    log_every: int = 50
    eval_every: int = 500
    sample_every: int = 1000
    valid_windows: int = 1024
    early_stopping_patience: int = 0    # evaluations without improvement before stopping; 0 = off

    def validate(self) -> "TrainConfig":
        for name in ("steps", "batch_size", "seq_len", "warmup", "log_every", "eval_every",
                     "sample_every", "valid_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ScratchMLMError(f"{name} must be a positive integer, got {value!r}.")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ScratchMLMError(f"device must be auto, cpu or cuda, got {self.device!r}.")
        if not 0 <= self.seed < 2 ** 32:
            raise ScratchMLMError(f"seed must be in 0 .. 2**32 - 1, got {self.seed}.")
        if not 0.0 < self.select_prob <= 1.0:
            raise ScratchMLMError(f"select_prob must be in (0, 1] (with 0 nothing is ever scored), "
                                  f"got {self.select_prob}.")
        if not self.noam_factor > 0:
            raise ScratchMLMError(f"noam_factor must be positive (0 never moves the weights, a negative "
                                  f"one climbs the loss), got {self.noam_factor}.")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ScratchMLMError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if not self.adam_eps > 0:
            raise ScratchMLMError(f"adam_eps must be positive, got {self.adam_eps}.")
        if not self.weight_decay >= 0:
            raise ScratchMLMError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if not self.clip_norm > 0:
            raise ScratchMLMError(f"clip_norm must be positive, got {self.clip_norm}.")
        if self.early_stopping_patience < 0:
            raise ScratchMLMError("early_stopping_patience must be >= 0 (0 turns it off).")
        return self


def _from_dict(cls, data: dict, what: str):
    if not isinstance(data, dict):
        raise ScratchMLMError(f"The {what} configuration must be a JSON object.")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ScratchMLMError(f"Unknown {what} setting(s) {unknown}; known ones: {sorted(names)}.")
    values = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ScratchMLMError(f"{what} setting {key} must be true or false, got {value!r}.")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(default) is not type(value):
            raise ScratchMLMError(f"{what} setting {key} must be a {type(default).__name__}, got {value!r}.")
        values[key] = value
    return cls(**values)


@dataclass
class RunConfig:
    """Both configurations together, as stored in a run directory's ``config.json``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        if not isinstance(data, dict) or set(data) - {"model", "train"}:
            raise ScratchMLMError('A configuration file is a JSON object {"model": {...}, "train": {...}}.')
        return cls(model=_from_dict(ModelConfig, data.get("model", {}), "model"),
                   train=_from_dict(TrainConfig, data.get("train", {}), "train"))

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` atomically (temp file, then rename)."""
        path = Path(path)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ScratchMLMError(f"Configuration file {path} does not exist.") from None
        except OSError as error:
            raise ScratchMLMError(f"Configuration file {path} cannot be read ({error.strerror}).") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ScratchMLMError(f"Configuration file {path} is not valid JSON: {error}.") from None
        return cls.from_dict(data)
