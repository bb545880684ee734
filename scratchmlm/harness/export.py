"""Exporting a trained model as a folder anyone can load without unpickling anything.

``scratchmlm export runs/seed`` (or :func:`export_run`) writes::

    runs/seed/export/
      model.safetensors   the weights, under the names of ``model.state_dict()``
      config.json         {"format": "scratchmlm-export", "format_version": 1, "scratchmlm_version": ...,
                           "model": {ModelConfig}, "train": {TrainConfig}, "step": ..., ...}
      tokenizer.json      the run's Hugging Face tokenizer file (``tokenizers.Tokenizer.from_file``)

and :func:`load_pretrained` (or ``load_run``, which accepts such a folder too) reads it back into a
``TransformerMLM`` (or ``BertMLM``) whose logits equal the run's bit for bit. Nothing here calls
``torch.load``: a ``.pt`` checkpoint is a pickle, which can run code when it is opened; these three
files are JSON and raw numbers.

The safetensors format
----------------------
Written and read by the ``safetensors`` package (``safetensors.torch.save`` and ``safe_open``),
which checks everything a damaged or hostile file can get wrong: the header length, the JSON,
every dtype, shape and data offset (the data of the tensors must tile the rest of the file
exactly), and a size limit on the header. Its one-line reasons become a ``ScratchMLMError`` that
names the file and the fix. One thing it lets through is refused here too: a header naming a
tensor twice (readers disagree on which of the two is meant). The layout, for reference::

    bytes 0..7        N, the length of the header: an unsigned 64-bit little-endian integer
    bytes 8..8+N      the header: UTF-8 JSON, one entry per tensor,
                        {"name": {"dtype": "F32", "shape": [68, 128], "data_offsets": [begin, end]}, ...,
                         "__metadata__": {"format": "pt"}}          (optional; strings to strings)
    bytes 8+N..       the data: each tensor's elements in C (row-major) order, little-endian

Towards Hugging Face ``BertForMaskedLM``
----------------------------------------
A model of ``architecture: "bert"`` (``--preset bert``, ``BertMLM``) *is* BERT's masked-LM
architecture: ``scratchmlm export RUN --format transformers`` writes it as a Hugging Face folder
(``scratchmlm/harness/hf.py``, which also holds the weight table and converts both ways).

The seed ``TransformerMLM`` has no exact counterpart. Its weights correspond to BERT's like this
(``i`` = layer, ``d`` = ``d_model``)::

    scratchmlm                                  BertForMaskedLM
    embeddings.token.weight  (x sqrt(d))        bert.embeddings.word_embeddings.weight
    embeddings.position (learned; the           bert.embeddings.position_embeddings.weight
      sinusoid table is a buffer, not saved)
    -                                           bert.embeddings.token_type_embeddings.weight
    -                                           bert.embeddings.LayerNorm.{weight,bias}
    encoder.layers.i.attention.qkv.weight       bert.encoder.layer.i.attention.self.{query,key,value}.weight
      rows [0:d], [d:2d], [2d:3d] (and .bias)     (and .bias)
    encoder.layers.i.attention.out              bert.encoder.layer.i.attention.output.dense
    encoder.layers.i.norm1                      bert.encoder.layer.i.attention.output.LayerNorm
    encoder.layers.i.feed_forward.linear1       bert.encoder.layer.i.intermediate.dense
    encoder.layers.i.feed_forward.linear2       bert.encoder.layer.i.output.dense
    encoder.layers.i.norm2                      bert.encoder.layer.i.output.LayerNorm
    encoder.final_norm (pre-norm only)          -
    -                                           cls.predictions.transform.{dense,LayerNorm}
    generator.projection.weight                 cls.predictions.decoder.weight (BERT ties it to
                                                  word_embeddings unless tie_word_embeddings=False)
    generator.projection.bias                   cls.predictions.bias
    -                                           (a pooler: BertForMaskedLM has none either)

Much of this maps exactly: ``sqrt(d_model)`` folds into the word embeddings (``W * sqrt(d)`` is
the very product the forward pass computes), the sinusoid table can be copied into
``position_embeddings``, the fused ``qkv`` splits into three, token-type embeddings of zeros add
exactly 0, and BERT's ``layer_norm_eps`` and ``hidden_act`` can be set to nn.LayerNorm's 1e-5 and
the exact-erf ``gelu``. But no conversion gives the same logits, so there is none for this model:

* **Pre-norm** (the default) has no BERT counterpart: BERT's layers are post-norm
  (``LayerNorm(x + sublayer(x))``) and it has no final LayerNorm.
* **BERT normalises its embeddings**: the first layer sees ``LayerNorm(word + position + type)``,
  scratchmlm's sees ``E sqrt(d) + P`` as it is. A LayerNorm removes each vector's mean and scale,
  and no weight or bias turns it into the identity, so even a post-norm, learned-position model
  feeds its first layer different vectors in BERT.
* **BERT's MLM head is not one linear map**: ``transform = LayerNorm(GELU(dense(h)))`` runs before
  the decoder, and GELU and LayerNorm are not linear, so no setting of the transform reproduces
  scratchmlm's single ``Generator``.

A converted seed model would therefore only start near the trained one and need fine-tuning to
match; train with ``--preset bert`` instead.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from .. import __version__
from ..errors import ScratchMLMError
from ..files import regular_file, write_atomically
from .build import build_model, check_model_memory, load_tokenizer, resolve_device
from .checkpoint import load_model_state
from .config import RunConfig, read_json

WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
EXPORT_FILES = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE)
EXPORT_FORMAT, EXPORT_FORMAT_VERSION = "scratchmlm-export", 1

# -- the safetensors format ---------------------------------------------------------------------------

METADATA_KEY = "__metadata__"


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> tensor) to ``path`` in the safetensors format, atomically. A
    non-contiguous tensor is stored as its elements in C order."""
    for name, tensor in tensors.items():
        if not isinstance(name, str) or name == METADATA_KEY:
            raise ScratchMLMError(f"A tensor cannot be named {_short(name)} in a safetensors file.")
        if not isinstance(tensor, torch.Tensor):
            raise ScratchMLMError(f"{name}: only tensors go into a safetensors file, got a {type(tensor).__name__}.")
    try:
        data = safetensors.torch.save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()},
                                      metadata)
    except KeyError as error:        # the package's table of dtypes has no entry for this one
        raise ScratchMLMError(f"Cannot store a {error.args[0]} tensor in safetensors; convert it first "
                              f"(e.g. tensor.float()).") from None
    except (TypeError, ValueError, RuntimeError, safetensors.SafetensorError) as error:
        raise ScratchMLMError(f"Cannot write {path} as safetensors: {_one_line(error)}.") from None
    return write_atomically(path, data, "weights")


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``, the tensors in memory of their own. Every
    inconsistency in the file is a one-line ``ScratchMLMError`` saying what is wrong."""
    path = regular_file(path, "weights file")

    def damaged(problem: str) -> ScratchMLMError:
        return ScratchMLMError(f"{path} is not a valid safetensors file: {problem}. The file is damaged or "
                               f"incomplete; export the run again.")

    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except safetensors.SafetensorError as error:
        raise damaged(_one_line(error).removeprefix("Error while deserializing header: ")) from None
    except OSError as error:
        raise ScratchMLMError(f"Cannot read the weights {path}: {error.strerror or type(error).__name__}.") from None
    _check_names_once(path, damaged)
    return tensors, metadata


def _check_names_once(path: Path, damaged) -> None:
    """Refuse a header that names a tensor twice (the package keeps one of the two silently). The
    package has already checked the header's length and JSON."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = file.read(length)

    def no_duplicates(pairs):
        names = [key for key, _ in pairs]
        for name in names:
            if names.count(name) > 1:
                raise damaged(f"the header names {_short(name)} twice")
        return dict(pairs)

    json.loads(header, object_pairs_hook=no_duplicates)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a damaged header can hold huge values)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- export and load ---------------------------------------------------------------------------------

def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`write_export` (it holds ``model.safetensors``)."""
    return (Path(path) / WEIGHTS_FILE).is_file()


def write_export(out: str | Path, model: torch.nn.Module, tokenizer, config: RunConfig, state: dict) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``tokenizer.json`` of a trained model (what
    ``load_run`` returns) into ``out``; returns ``out``.

    ``out`` may be new, empty, or an earlier export (its three files are replaced); a folder holding
    anything else (a run directory, say) is refused rather than overwritten.
    """
    out = Path(out)
    check_export_target(out)
    description = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "scratchmlm_version": __version__,
        "architecture": type(model).__name__, "model": config.to_dict()["model"], "train": config.to_dict()["train"],
        "step": state["step"], "checkpoint": state.get("checkpoint"),
        "valid_fingerprint": state.get("valid_fingerprint"),
        "special_tokens": {token: tokenizer.token_to_id[token] for token in tokenizer.vocab[:tokenizer.first_real_id]},
        "torch_version": torch.__version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.state_dict(), out / WEIGHTS_FILE,
                     {"format": "pt", "scratchmlm_version": __version__, "step": str(state["step"])})
    tokenizer.save(out / TOKENIZER_FILE)
    write_atomically(out / CONFIG_FILE, json.dumps(description, indent=2) + "\n", "configuration")
    return out


def check_export_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ScratchMLMError(f"--out {out} is a file; give a directory for the export.")
    if not out.is_dir():
        return
    others = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES)
    if others:
        raise ScratchMLMError(f"{out} already holds other files ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}); export into a new or empty directory.")
    if (out / CONFIG_FILE).is_file() and not _is_export_config(read_json(out / CONFIG_FILE, "configuration")):
        raise ScratchMLMError(f"{out / CONFIG_FILE} is not a scratchmlm export's config.json; "
                              f"export into a new or empty directory.")


def _is_export_config(data) -> bool:
    return isinstance(data, dict) and data.get("format") == EXPORT_FORMAT


def load_pretrained(path: str | Path, device: str = "auto"):
    """An exported model: ``(model, tokenizer, config)``, the model in eval mode on ``device``.

    ``config`` is the run's ``RunConfig``. Only JSON and safetensors are read, never a pickle.
    """
    model, tokenizer, config, _ = load_export(path, device)
    return model, tokenizer, config


def load_export(path: str | Path, device: str = "auto"):
    """:func:`load_pretrained` plus the ``state`` that ``load_run`` returns (``step``, ``vocab``,
    ``valid_fingerprint``, ``checkpoint``)."""
    path = Path(path)
    if not is_export(path):
        hint = (" It is a run directory: use load_run, or 'scratchmlm export' it first."
                if (path / "checkpoints").is_dir() else "")
        raise ScratchMLMError(f"{path} is not an exported model (no {WEIGHTS_FILE}).{hint}")
    description = read_json(path / CONFIG_FILE, "configuration")
    if not _is_export_config(description):
        raise ScratchMLMError(f"{path / CONFIG_FILE} is not a scratchmlm export's config.json "
                              f"(no \"format\": \"{EXPORT_FORMAT}\").")
    if description.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ScratchMLMError(f"{path / CONFIG_FILE} has format_version {_short(description.get('format_version'))}; "
                              f"this scratchmlm reads {EXPORT_FORMAT_VERSION}. Use the scratchmlm that wrote it.")
    step = description.get("step")
    if type(step) is not int or step < 0:
        raise ScratchMLMError(f"{path / CONFIG_FILE}: 'step' must be an integer >= 0, got {_short(step)}.")
    config = RunConfig.from_dict({"model": description.get("model"), "train": description.get("train")})
    config.model.validate()
    check_model_memory(config.model, path / CONFIG_FILE)    # before anything reads or builds more
    tokenizer = load_tokenizer(path / TOKENIZER_FILE)
    if config.model.vocab_size != tokenizer.vocab_size:
        raise ScratchMLMError(f"{path / CONFIG_FILE} says vocab_size {config.model.vocab_size} but "
                              f"{path / TOKENIZER_FILE} has {tokenizer.vocab_size} tokens.")
    weights, _ = load_safetensors(path / WEIGHTS_FILE)
    model = build_model(config.model, 0)
    load_model_state(model, weights, path / WEIGHTS_FILE)
    model.set_fused_attention(config.train.fused_attention)
    state = {"step": step, "vocab": tokenizer.vocab, "valid_fingerprint": description.get("valid_fingerprint"),
             "checkpoint": description.get("checkpoint")}
    return model.to(resolve_device(device)).eval(), tokenizer, config, state
