"""The two configurations, as plain dataclasses with the seed defaults, and their JSON round trip.

``ModelConfig`` describes the network; ``TrainConfig`` everything about a training run (data,
masking, optimiser, schedule, logging). A run directory stores both in ``config.json``.

Each field carries its own help text (and, for a setting with a fixed set of values, its
``choices``) in ``metadata``; the command line builds one flag per field from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScratchMLMError
from ..files import regular_file, write_atomically


def setting(default, help: str, choices: tuple | None = None):
    """A dataclass field with its help text (and allowed values) attached."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ModelConfig:
    vocab_size: int = setting(68, "number of token ids; always taken from the tokenizer (68 for Tiny "
                                  "Shakespeare: 65 characters + [PAD] [MASK] [UNK])")
    d_model: int = setting(128, "width of every hidden vector (divisible by --num-heads)")
    num_heads: int = setting(8, "attention heads per layer; each gets d_model / num_heads dimensions")
    num_layers: int = setting(6, "number of encoder layers")
    d_ff: int = setting(256, "hidden width of the position-wise feed-forward network")
    max_len: int = setting(32, "longest sequence the position table covers (at least --seq-len)")
    dropout: float = setting(0.1, "dropout probability on embeddings, attention weights and sub-layer "
                                  "outputs (0 turns it off)")
    norm_first: bool = setting(True, "pre-norm (true) or the original post-norm (false) encoder layers")
    activation: str = setting("gelu", "feed-forward activation", ("gelu", "relu"))
    positional: str = setting("sinusoidal", "position signal: a fixed sinusoid table or a learned one",
                              ("sinusoidal", "learned"))
    init_std: float = setting(0.02, "standard deviation of the initial linear weights (biases start at 0)")
    layer_norm_eps: float = setting(1e-5, "the epsilon every LayerNorm adds to the variance (BERT: 1e-12)")
    architecture: str = setting("transformer", "transformer: the seed model (TransformerMLM); bert: BERT's "
                                               "masked-LM architecture (BertMLM: normalised embeddings with "
                                               "token types, post-norm, a transform head, the decoder tied to "
                                               "the embeddings), which needs --norm-first false --positional "
                                               "learned; --preset bert sets it up", ("transformer", "bert"))

    def validate(self) -> "ModelConfig":
        check_types(self, "model")
        # The modules' own checks (imported here, not at the top: the command line reads this module
        # for its flags, and `scratchmlm --help` imports no torch).
        from ..model.attention import check_heads
        from ..model.dropout import check_dropout
        from ..model.mlm import check_model_arguments

        sizes = {name: getattr(self, name) for name in ("vocab_size", "d_model", "num_heads", "num_layers", "d_ff",
                                                        "max_len")}
        as_config_error(check_model_arguments, self.init_std, **sizes)
        as_config_error(check_heads, self.d_model, self.num_heads)
        as_config_error(check_dropout, self.dropout)
        if not self.layer_norm_eps > 0:
            raise ScratchMLMError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}.")
        if self.architecture == "bert" and (self.norm_first or self.positional != "learned"):
            raise ScratchMLMError("architecture bert is post-norm with learned positions: add --norm-first false "
                                  "--positional learned (or start from --preset bert).")
        return self


@dataclass
class TrainConfig:
    data: str = setting("tinyshakespeare", "corpus: 'tinyshakespeare' (downloaded and verified) or the "
                                           "path of any UTF-8 text file")
    seed: int = setting(0, "one seed for initialisation, batches, masking and dropout")
    device: str = setting("auto", "auto (a CUDA GPU if there is one), cpu, cuda or cuda:N")
    steps: int = setting(6000, "optimizer steps to train for (a resumed run continues up to this number)")
    batch_size: int = setting(64, "windows per training batch")
    seq_len: int = setting(32, "tokens per window (characters with the char tokenizer)")
    tokenizer: str = setting("char", "the vocabulary: one id per character, or subwords learned from the "
                                     "training split by BPE or WordPiece", ("char", "bpe", "wordpiece"))
    vocab_size: int = setting(0, "size of a learned subword vocabulary, specials included (0: 1000); the "
                                 "char tokenizer's vocabulary is the text's alphabet")
    # masking
    select_prob: float = setting(0.15, "share of positions the masker selects for prediction")
    mask_token_prob: float = setting(0.8, "of the selected, the share shown as [MASK]")
    random_token_prob: float = setting(0.1, "of the selected, the share replaced by a random real character "
                                            "(the rest stay unchanged)")
    masking: str = setting("bert", "what is selected: single tokens (bert), whole words (whole-word) or "
                                   "spans of geometric length (span)", ("bert", "whole-word", "span"))
    span_mean: float = setting(3.0, "span masking: the mean span length in tokens (at least 1)")
    init_from: str = setting("", "continue pre-training from this run's best weights, keeping its model "
                                 "and vocabulary (domain adaptation); empty: start from random weights")
    # optimiser and schedule
    noam_factor: float = setting(1.0, "scales the whole Noam schedule: peak lr = factor * (d_model * warmup)^-0.5")
    warmup: int = setting(2000, "Noam warm-up steps: the learning rate rises linearly to its peak at this step")
    optimizer: str = setting("adam", "adam: weight decay is added to the gradient (an L2 penalty); adamw: it "
                                     "shrinks the weights directly, apart from the gradient statistics "
                                     "(decoupled, as in BERT)", ("adam", "adamw"))
    adam_beta1: float = setting(0.9, "Adam's decay rate of the gradient mean")
    adam_beta2: float = setting(0.98, "Adam's decay rate of the squared-gradient mean")
    adam_eps: float = setting(1e-9, "Adam's epsilon in the denominator")
    weight_decay: float = setting(0.0, "weight decay, applied as --optimizer says (0: off)")
    clip_norm: float = setting(1.0, "clip the global gradient norm to this before each step")
    # speed
    fused_attention: bool = setting(False, "use torch's fused attention kernel (same math; slower on a CPU "
                                           "with dropout)")
    precision: str = setting("fp32", "arithmetic of the forward pass: fp32, or bf16 autocast (matrix products "
                                      "in bfloat16, weights, optimizer and loss in float32)", ("fp32", "bf16"))
    compile: bool = setting(False, "run the model through torch.compile (the first steps pay the compilation)")
    lr_scaling: str = setting("none", "large batches: multiply the Noam factor by (global batch / 64) ** 0.5 "
                                      "(sqrt) or by global batch / 64 (linear); the global batch is "
                                      "batch_size x the number of processes", ("none", "sqrt", "linear"))
    # logging, evaluation, checkpoints
    log_every: int = setting(50, "log training loss / accuracy / lr / gradient norm every N steps")
    eval_every: int = setting(500, "evaluate on the frozen validation set and checkpoint every N steps")
    sample_every: int = setting(1000, "write coloured samples every N steps")
    valid_windows: int = setting(1024, "number of fixed validation windows")
    stop_at_top1: float = setting(0.0, "stop at the first evaluation whose validation top-1 reaches this "
                                       "(0: off); what a time-to-accuracy run needs")
    early_stopping_patience: int = setting(0, "stop after this many evaluations without a better validation "
                                              "loss (0: off)")

    def validate(self) -> "TrainConfig":
        check_types(self, "train")
        for name in ("steps", "batch_size", "seq_len", "warmup", "log_every", "eval_every",
                     "sample_every", "valid_windows"):
            value = getattr(self, name)
            if value < 1:
                raise ScratchMLMError(f"{name} must be a positive integer, got {value!r}.")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ScratchMLMError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}.")
        if not 0 <= self.seed < 2 ** 32:
            raise ScratchMLMError(f"seed must be in 0 .. 2**32 - 1, got {self.seed}.")
        from ..masking import check_probabilities, check_span      # the masker's own checks (see ModelConfig)

        check_probabilities(self.select_prob, self.mask_token_prob, self.random_token_prob)
        if self.masking == "span":
            check_span(self.span_mean, self.select_prob)
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
        if not 0.0 <= self.stop_at_top1 <= 1.0:
            raise ScratchMLMError(f"stop_at_top1 must be an accuracy in [0, 1] (0: off), got {self.stop_at_top1}.")
        if self.tokenizer == "char" and self.vocab_size != 0:
            raise ScratchMLMError(f"vocab_size ({self.vocab_size}) applies to --tokenizer bpe or wordpiece; the "
                                  f"char tokenizer's vocabulary is the text's alphabet. Leave --vocab-size out.")
        if not 0 <= self.vocab_size <= LARGEST_SUBWORD_VOCAB:
            raise ScratchMLMError(f"vocab_size must be positive (or 0 for the default) and at most "
                                  f"{LARGEST_SUBWORD_VOCAB:,}, got {self.vocab_size}.")
        if self.early_stopping_patience < 0:
            raise ScratchMLMError("early_stopping_patience must be >= 0 (0 turns it off).")
        return self


LARGEST_INT = 2 ** 63 - 1           # what torch and numpy can hold in an int64
LARGEST_SUBWORD_VOCAB = 1_000_000   # far beyond any useful size; tokenizers' ids are 32-bit
TYPES = {"int": int, "float": float, "bool": bool, "str": str}
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def as_config_error(check, *values, **named_values) -> None:
    """Run a model module's own check of its arguments: its one-line ``ValueError`` (the model
    imports nothing from scratchmlm, so not a ``ScratchMLMError``) becomes a ``ScratchMLMError``."""
    try:
        check(*values, **named_values)
    except ValueError as error:
        raise ScratchMLMError(str(error)) from None


def check_types(config, what: str) -> None:
    """Every field holds a value of its declared type (an int is accepted for a float), floats are
    finite, and a field with ``choices`` holds one of them."""
    for spec in dataclasses.fields(config):
        value, kind = getattr(config, spec.name), TYPES[spec.type]
        accepted = (int, float) if kind is float else kind
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accepted):
            raise ScratchMLMError(f"{what} setting {spec.name} must be {TYPE_NAMES[kind]}, got {value!r}.")
        if kind is int and not -LARGEST_INT <= value <= LARGEST_INT:
            raise ScratchMLMError(f"{what} setting {spec.name} must be at most {LARGEST_INT:,} in size, "
                                  f"got {value!r}.")
        if kind is float and not (abs(value) < 1e300 and math.isfinite(value)):
            raise ScratchMLMError(f"{what} setting {spec.name} must be a finite number, got {value!r}.")
        choices = spec.metadata.get("choices")
        if choices and value not in choices:
            raise ScratchMLMError(f"{what} setting {spec.name} must be one of {', '.join(choices)}, "
                                  f"got {value!r}.")


def read_json(path: str | Path, what: str):
    """Parse a JSON file; a missing, unreadable, non-UTF-8, malformed or hostile one (nesting deep
    enough to exhaust the recursion limit, integers too long to convert) is a ``ScratchMLMError``."""
    path = regular_file(path, f"{what} file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScratchMLMError(f"The {what} file {path} does not exist.") from None
    except OSError as error:
        raise ScratchMLMError(f"The {what} file {path} cannot be read ({error.strerror}).") from None
    except UnicodeDecodeError:
        raise ScratchMLMError(f"The {what} file {path} is not UTF-8 text.") from None
    except RecursionError:
        raise ScratchMLMError(f"The {what} file {path} is nested too deeply to be a {what}.") from None
    except ValueError as error:   # json.JSONDecodeError, or an integer with thousands of digits
        raise ScratchMLMError(f"The {what} file {path} is not valid JSON: {str(error)[:200]}.") from None


def _from_dict(cls, data: dict, what: str):
    if not isinstance(data, dict):
        raise ScratchMLMError(f"The {what} configuration must be a JSON object.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ScratchMLMError(f"Unknown {what} setting(s) {unknown}; known ones: {sorted(names)}.")
    config = cls(**data)
    check_types(config, what)
    for key, value in data.items():       # 1 in a float field is stored as 1.0
        if isinstance(getattr(cls(), key), float):
            setattr(config, key, float(value))
    return config


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
        """Write ``config.json`` atomically (``scratchmlm.files.write_atomically``)."""
        write_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n", "configuration")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(read_json(path, "configuration"))


def check_resumed_config(saved: dict, now: dict, source: str) -> None:
    """A resumed run keeps its configuration: of the settings of ``now`` (``RunConfig.to_dict()``),
    only ``train.steps`` may differ from ``saved``; ``source`` says where ``saved`` comes from."""
    changed = sorted(f"{section}.{name}" for section in ("model", "train") for name in now[section]
                     if (section, name) != ("train", "steps") and saved.get(section, {}).get(name) != now[section][name])
    if changed:
        raise ScratchMLMError(f"The configuration differs from the one {source} ({', '.join(changed)}); a resumed "
                              f"run keeps its settings, only --steps may change. Restore them, or start a new run.")


PRESETS = {
    "seed": "the seed configuration (the defaults): the one the published comparisons use",
    "fast": "the seed model without dropout, warmed up over 500 steps to a peak learning rate of 3.95e-3: "
            "0.630 validation top-1 in 262-317 s of training on 2 CPU threads (3250-3750 steps, seeds 0-2)",
    "bert": "BERT's masked-LM architecture (BertMLM, LayerNorm epsilon 1e-12) at the seed size, trained like the "
            "seed; converts to and from transformers.BertForMaskedLM (scratchmlm.harness.hf, export --format transformers)",
}


def preset(name: str) -> RunConfig:
    """A named configuration shipped with scratchmlm (``scratchmlm/presets/<name>.json``)."""
    if name not in PRESETS:
        raise ScratchMLMError(f"Unknown preset {name!r}; the presets are {', '.join(PRESETS)}.")
    return RunConfig.load(Path(__file__).resolve().parents[1] / "presets" / f"{name}.json")
