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
Written and read by hand below (the ``safetensors`` package reads our files and we read its;
the tests check both directions)::

    bytes 0..7        N, the length of the header: an unsigned 64-bit little-endian integer
    bytes 8..8+N      the header: UTF-8 JSON, one entry per tensor,
                        {"name": {"dtype": "F32", "shape": [68, 128], "data_offsets": [begin, end]}, ...,
                         "__metadata__": {"format": "pt"}}          (optional; strings to strings)
                      padded with spaces so that the data starts at a multiple of 8
    bytes 8+N..       the data: each tensor's elements in C (row-major) order, little-endian, at
                      data[begin:end]; end - begin = numel x element size, and the ranges tile
                      the data exactly (no gap, no overlap, nothing after the last one)

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
import os
import struct
import sys
from pathlib import Path

import torch

from .. import __version__
from ..errors import ScratchMLMError
from .build import build_model, check_model_memory, load_tokenizer, resolve_device
from .checkpoint import load_model_state
from .config import RunConfig, read_json

WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
EXPORT_FILES = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE)
EXPORT_FORMAT, EXPORT_FORMAT_VERSION = "scratchmlm-export", 1

# -- the safetensors format ---------------------------------------------------------------------------

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
          torch.uint8: "U8", torch.bool: "BOOL"}
DTYPE_OF_NAME = {name: dtype for dtype, name in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024     # the limit the safetensors package itself enforces
METADATA_KEY = "__metadata__"


def _check_little_endian() -> None:
    if sys.byteorder != "little":
        raise ScratchMLMError("safetensors files hold little-endian numbers, and this machine is big-endian; "
                              "scratchmlm's reader and writer do not convert them. Use the safetensors package.")


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> tensor) to ``path`` in the safetensors format, atomically."""
    _check_little_endian()
    metadata = {} if metadata is None else metadata
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ScratchMLMError("safetensors metadata maps strings to strings; convert the values with str().")
    header, chunks, offset = {}, [], 0
    if metadata:
        header[METADATA_KEY] = dict(metadata)
    for name, tensor in tensors.items():
        if not isinstance(name, str) or name == METADATA_KEY:
            raise ScratchMLMError(f"A tensor cannot be named {name!r} in a safetensors file.")
        if not isinstance(tensor, torch.Tensor) or tensor.dtype not in DTYPES:
            kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ScratchMLMError(f"{name}: cannot store a {kind} in safetensors; supported dtypes: "
                                  f"{', '.join(str(d) for d in DTYPES)}.")
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % 8)        # the data starts at a multiple of 8
    return write_atomically(path, [struct.pack("<Q", len(encoded)), encoded, *chunks])


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``. Every inconsistency in the file is a
    ``ScratchMLMError`` saying what is wrong; no byte outside the file is ever read."""
    _check_little_endian()
    path = Path(path)
    try:
        raw = bytearray(path.read_bytes())       # writable, so torch.frombuffer can view it
    except OSError as error:
        reason = {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory"}.get(
            type(error), error.strerror or type(error).__name__)
        raise ScratchMLMError(f"Cannot read the weights {path}: {reason}.") from None

    def damaged(problem: str) -> ScratchMLMError:
        return ScratchMLMError(f"{path} is not a valid safetensors file: {problem}. The file is damaged or "
                               f"incomplete; export the run again.")

    if len(raw) < 8:
        raise damaged(f"it has {len(raw)} bytes, fewer than the 8 that give the header length")
    (header_length,) = struct.unpack("<Q", raw[:8])
    if header_length > min(len(raw) - 8, MAX_HEADER_BYTES):
        raise damaged(f"its header length {header_length} runs past the end of the file ({len(raw)} bytes)"
                      if header_length > len(raw) - 8 else f"its header length {header_length} exceeds 100 MiB")
    header = _parse_header(bytes(raw[8:8 + header_length]), damaged)
    metadata = header.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise damaged(f"'{METADATA_KEY}' must map strings to strings")
    data_start, data_length = 8 + header_length, len(raw) - 8 - header_length
    entries = [(name, *_entry(name, entry, damaged)) for name, entry in header.items()]
    expected_start = 0
    for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != expected_start:
            raise damaged(f"tensor {_short(name)} starts at byte {begin} of the data, expected {expected_start} "
                          f"({'a gap before it' if begin > expected_start else 'it overlaps the tensor before'})")
        expected_start = end
    if expected_start != data_length:
        raise damaged(f"the tensors need {expected_start} bytes of data, the file has {data_length}"
                      + (" (truncated)" if expected_start > data_length else " (extra bytes at the end)"))
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        tensor = torch.empty(shape, dtype=dtype)
        if end > begin:      # copied out of the file's bytes into the tensor's own aligned memory
            tensor.reshape(-1).view(torch.uint8).copy_(
                torch.frombuffer(raw, dtype=torch.uint8, count=end - begin, offset=data_start + begin))
        tensors[name] = tensor
    return tensors, metadata


def _parse_header(text: bytes, damaged) -> dict:
    def no_duplicates(pairs):
        names = [key for key, _ in pairs]
        if len(set(names)) != len(names):
            raise damaged(f"the header names {_short(next(n for n in names if names.count(n) > 1))} twice")
        return dict(pairs)

    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=no_duplicates)
    except ScratchMLMError:          # from no_duplicates (a ValueError too, so caught first)
        raise
    except UnicodeDecodeError:
        raise damaged("its header is not UTF-8 text") from None
    except RecursionError:
        raise damaged("its header is nested too deeply") from None
    except ValueError as error:      # json.JSONDecodeError, or an integer with thousands of digits
        raise damaged(f"its header is not valid JSON ({str(error)[:120]})") from None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    return header


def _entry(name: str, entry, damaged) -> tuple[torch.dtype, list[int], int, int]:
    """One header entry, checked: ``(dtype, shape, begin, end)``."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise damaged(f"the entry of {_short(name)} must be an object with exactly dtype, shape and data_offsets")
    dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    dtype = DTYPE_OF_NAME.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise damaged(f"{_short(name)} has dtype {_short(dtype_name)}; scratchmlm reads {', '.join(DTYPE_OF_NAME)}")
    if not isinstance(shape, list) or not all(type(n) is int and 0 <= n < 2 ** 63 for n in shape):
        raise damaged(f"the shape of {_short(name)} must be a list of integers >= 0, got {_short(shape)}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise damaged(f"the data_offsets of {_short(name)} must be [begin, end] with 0 <= begin <= end, "
                      f"got {_short(offsets)}")
    numel = 1
    for size in shape:
        numel *= size
    if offsets[1] - offsets[0] != numel * dtype.itemsize:
        raise damaged(f"{_short(name)} ({dtype_name} {_short(shape)}) needs {numel * dtype.itemsize} bytes, "
                      f"its data_offsets {_short(offsets)} give {offsets[1] - offsets[0]}")
    return dtype, shape, offsets[0], offsets[1]


def _short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a damaged header can hold huge values)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def write_atomically(path: str | Path, chunks: list[bytes]) -> Path:
    """Write ``chunks`` to a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        raise ScratchMLMError(f"Cannot write {path}: {error.strerror or type(error).__name__}.") from None
    return path


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
    write_atomically(out / CONFIG_FILE, [(json.dumps(description, indent=2) + "\n").encode("utf-8")])
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
