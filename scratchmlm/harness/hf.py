"""Converting between scratchmlm's ``BertMLM`` and Hugging Face's ``transformers.BertForMaskedLM``.

``from_transformers(hf_model)`` gives a ``BertMLM`` and ``to_transformers(model)`` a
``BertForMaskedLM`` that compute the same logits and gradients (``tests/test_hf.py`` holds them equal
to 1e-10 in float64). ``export_transformers(run_dir)`` (``scratchmlm export RUN --format
transformers``) writes a folder that ``BertForMaskedLM.from_pretrained`` and
``pipeline("fill-mask", model=folder)`` load. This module is interop, not part of the model:
nothing in the core imports it, and it needs ``pip install scratchmlm[hf]``.

The weights correspond one to one (``i`` = layer, ``d`` = ``d_model``)::

    scratchmlm BertMLM                          BertForMaskedLM
    embeddings.token.weight                     bert.embeddings.word_embeddings.weight
    embeddings.token_type.weight                bert.embeddings.token_type_embeddings.weight
    embeddings.position.weight                  bert.embeddings.position_embeddings.weight
    embeddings.norm                             bert.embeddings.LayerNorm
    encoder.layers.i.attention.qkv              bert.encoder.layer.i.attention.self.{query,key,value}
      rows [0:d], [d:2d], [2d:3d]                 (weight and bias; heads split alike in both)
    encoder.layers.i.attention.out              bert.encoder.layer.i.attention.output.dense
    encoder.layers.i.norm1                      bert.encoder.layer.i.attention.output.LayerNorm
    encoder.layers.i.feed_forward.linear1       bert.encoder.layer.i.intermediate.dense
    encoder.layers.i.feed_forward.linear2       bert.encoder.layer.i.output.dense
    encoder.layers.i.norm2                      bert.encoder.layer.i.output.LayerNorm
    head.dense, head.norm                       cls.predictions.transform.dense, .LayerNorm
    (the token embeddings, tied)                cls.predictions.decoder.weight (tied to word_embeddings)
    head.bias                                   cls.predictions.bias (= cls.predictions.decoder.bias)

and the settings: ``d_model`` = ``hidden_size``, ``num_heads`` = ``num_attention_heads``,
``num_layers`` = ``num_hidden_layers``, ``d_ff`` = ``intermediate_size``, ``max_len`` =
``max_position_embeddings``, ``dropout`` = ``hidden_dropout_prob`` = ``attention_probs_dropout_prob``,
``activation`` = ``hidden_act`` (``gelu`` is the exact erf GELU in both), ``layer_norm_eps``,
``init_std`` = ``initializer_range``, the ``[PAD]`` id = ``pad_token_id``.

The seed ``TransformerMLM`` has no ``BertForMaskedLM`` counterpart (see ``export.py``); train with
``--preset bert`` to get a model that converts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import ScratchMLMError
from ..model import BertMLM
from .config import ModelConfig, read_json
from .run_dir import load_run

INSTALL_HINT = "pip install 'scratchmlm[hf]' (or pip install transformers)"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ScratchMLMError(f"Converting to or from Hugging Face needs the transformers package: "
                              f"{INSTALL_HINT}.") from None
    return transformers


# -- the names -------------------------------------------------------------------------------------

def _renames(num_layers: int) -> list[tuple[str, str]]:
    """``(scratchmlm name, BertForMaskedLM name)`` of every tensor that maps as it is."""
    pairs = [("embeddings.token.weight", "bert.embeddings.word_embeddings.weight"),
             ("embeddings.token_type.weight", "bert.embeddings.token_type_embeddings.weight"),
             ("embeddings.position.weight", "bert.embeddings.position_embeddings.weight")]
    pairs += [(f"embeddings.norm.{p}", f"bert.embeddings.LayerNorm.{p}") for p in ("weight", "bias")]
    for i in range(num_layers):
        ours, theirs = f"encoder.layers.{i}", f"bert.encoder.layer.{i}"
        for a, b in (("attention.out", "attention.output.dense"), ("norm1", "attention.output.LayerNorm"),
                     ("feed_forward.linear1", "intermediate.dense"), ("feed_forward.linear2", "output.dense"),
                     ("norm2", "output.LayerNorm")):
            pairs += [(f"{ours}.{a}.{p}", f"{theirs}.{b}.{p}") for p in ("weight", "bias")]
    for a, b in (("head.dense", "cls.predictions.transform.dense"),
                 ("head.norm", "cls.predictions.transform.LayerNorm")):
        pairs += [(f"{a}.{p}", f"{b}.{p}") for p in ("weight", "bias")]
    pairs.append(("head.bias", "cls.predictions.bias"))
    return pairs


def _qkv_names(i: int) -> tuple[str, list[str]]:
    """Layer ``i``'s fused projection (scratchmlm) and its three parts (BertForMaskedLM), without
    the ``.weight`` / ``.bias`` suffix."""
    return (f"encoder.layers.{i}.attention.qkv",
            [f"bert.encoder.layer.{i}.attention.self.{part}" for part in ("query", "key", "value")])


# -- the settings ----------------------------------------------------------------------------------

def model_config_from_bert(hf_config) -> ModelConfig:
    """The ``ModelConfig`` of a ``transformers.BertConfig``; a setting ``BertMLM`` cannot express is
    a ``ScratchMLMError`` that names it."""
    c = hf_config

    def refuse(problem: str):
        raise ScratchMLMError(f"This BertForMaskedLM cannot be converted: {problem}.")

    if c.hidden_act not in ("gelu", "relu"):
        refuse(f"hidden_act is {c.hidden_act!r}; scratchmlm has 'gelu' (exact erf) and 'relu'")
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        refuse(f"position_embedding_type is {c.position_embedding_type!r}; BertMLM has absolute positions")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        refuse("it is configured as a decoder; BertMLM is an encoder")
    if not getattr(c, "tie_word_embeddings", True):
        refuse("tie_word_embeddings is false; BertMLM's decoder is always the token embeddings")
    if c.hidden_dropout_prob != c.attention_probs_dropout_prob:
        refuse(f"hidden_dropout_prob {c.hidden_dropout_prob} differs from attention_probs_dropout_prob "
               f"{c.attention_probs_dropout_prob}; BertMLM has one dropout (set both to the same value)")
    return ModelConfig(vocab_size=c.vocab_size, d_model=c.hidden_size, num_heads=c.num_attention_heads,
                       num_layers=c.num_hidden_layers, d_ff=c.intermediate_size, max_len=c.max_position_embeddings,
                       dropout=float(c.hidden_dropout_prob), norm_first=False, activation=c.hidden_act,
                       positional="learned", init_std=float(c.initializer_range),
                       layer_norm_eps=float(c.layer_norm_eps), architecture="bert")


def bert_config(model_config: ModelConfig, type_vocab_size: int = 2, pad_token_id: int = 0, **extra):
    """The ``transformers.BertConfig`` of a ``ModelConfig`` with ``architecture: "bert"``."""
    if model_config.architecture != "bert":
        raise ScratchMLMError(f"Only the bert architecture converts to BertForMaskedLM, this model is "
                              f"{model_config.architecture!r} (the seed TransformerMLM has no Hugging Face "
                              f"counterpart); train with --preset bert.")
    m = model_config.validate()
    return _transformers().BertConfig(
        vocab_size=m.vocab_size, hidden_size=m.d_model, num_attention_heads=m.num_heads,
        num_hidden_layers=m.num_layers, intermediate_size=m.d_ff, max_position_embeddings=m.max_len,
        hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.dropout, hidden_act=m.activation,
        initializer_range=m.init_std, layer_norm_eps=m.layer_norm_eps, type_vocab_size=type_vocab_size,
        pad_token_id=pad_token_id, tie_word_embeddings=True, architectures=["BertForMaskedLM"], **extra)


def model_config_of(model: BertMLM) -> ModelConfig:
    """The ``ModelConfig`` that builds ``model``'s architecture, read off its modules."""
    if not isinstance(model, BertMLM):
        raise ScratchMLMError(f"Only a BertMLM converts to BertForMaskedLM, not a {type(model).__name__} (the seed "
                              f"TransformerMLM has no Hugging Face counterpart); train with --preset bert.")
    layer = model.encoder.layers[0]
    activation = "relu" if isinstance(layer.feed_forward.activation, nn.ReLU) else "gelu"
    if isinstance(layer.feed_forward.activation, nn.GELU) and layer.feed_forward.activation.approximate != "none":
        raise ScratchMLMError("Only the exact (erf) GELU has a BertForMaskedLM counterpart ('gelu').")
    return ModelConfig(vocab_size=model.vocab_size, d_model=model.embeddings.token.embedding_dim,
                       num_heads=layer.attention.num_heads, num_layers=len(model.encoder.layers),
                       d_ff=layer.feed_forward.linear1.out_features, max_len=model.max_len,
                       dropout=float(model.embeddings.dropout.p), norm_first=False, activation=activation,
                       positional="learned", layer_norm_eps=float(layer.norm1.eps), architecture="bert")


# -- the models ------------------------------------------------------------------------------------

def from_transformers(hf_model) -> BertMLM:
    """A ``BertMLM`` with ``hf_model``'s weights (a ``transformers.BertForMaskedLM``): same dtype,
    device and train/eval mode, the same logits."""
    transformers = _transformers()
    if not isinstance(hf_model, transformers.BertForMaskedLM):
        raise ScratchMLMError(f"from_transformers takes a transformers.BertForMaskedLM, not a "
                              f"{type(hf_model).__name__}.")
    config = model_config_from_bert(hf_model.config)
    theirs = hf_model.state_dict()
    word_embeddings = theirs["bert.embeddings.word_embeddings.weight"]
    if not torch.equal(theirs["cls.predictions.decoder.weight"], word_embeddings):
        raise ScratchMLMError("This BertForMaskedLM's decoder weight differs from its word embeddings; BertMLM's "
                              "decoder is always the token embeddings.")
    if not torch.equal(theirs["cls.predictions.decoder.bias"], theirs["cls.predictions.bias"]):
        raise ScratchMLMError("This BertForMaskedLM's decoder bias differs from cls.predictions.bias.")
    settings = {name: value for name, value in vars(config).items()
                if name not in ("norm_first", "positional", "architecture")}
    model = BertMLM(**settings, type_vocab_size=hf_model.config.type_vocab_size,
                    padding_id=hf_model.config.pad_token_id if hf_model.config.pad_token_id is not None else 0)
    ours = {a: theirs[b] for a, b in _renames(config.num_layers)}
    for i in range(config.num_layers):
        fused, parts = _qkv_names(i)
        for suffix in ("weight", "bias"):
            ours[f"{fused}.{suffix}"] = torch.cat([theirs[f"{part}.{suffix}"] for part in parts])
    model.to(device=word_embeddings.device, dtype=word_embeddings.dtype)
    model.load_state_dict(ours)
    return model.train(hf_model.training)


def to_transformers(model: BertMLM):
    """A ``transformers.BertForMaskedLM`` with ``model``'s weights (a ``BertMLM``): same dtype,
    device and train/eval mode, the same logits; its decoder tied to its word embeddings."""
    transformers = _transformers()
    config = model_config_of(model)
    hf_config = bert_config(config, type_vocab_size=model.embeddings.token_type.num_embeddings,
                            pad_token_id=model.embeddings.token.padding_idx)
    ours = model.state_dict()
    theirs = {b: ours[a] for a, b in _renames(config.num_layers)}
    for i in range(config.num_layers):
        fused, parts = _qkv_names(i)
        for suffix in ("weight", "bias"):
            for part, chunk in zip(parts, ours[f"{fused}.{suffix}"].chunk(3)):
                theirs[f"{part}.{suffix}"] = chunk
    theirs["cls.predictions.decoder.weight"] = ours["embeddings.token.weight"]
    theirs["cls.predictions.decoder.bias"] = ours["head.bias"]
    reference = model.embeddings.token.weight
    hf_model = transformers.BertForMaskedLM(hf_config).to(device=reference.device, dtype=reference.dtype)
    hf_model.load_state_dict(theirs)
    return hf_model.train(model.training)


# -- export ----------------------------------------------------------------------------------------

def export_transformers(run_dir: str | Path, out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Write a run's ``best`` or ``last`` weights as a Hugging Face folder (``config.json``,
    ``model.safetensors``, the tokenizer files) into ``out`` (default ``<run_dir>/transformers``).

    ``BertForMaskedLM.from_pretrained(out)``, ``AutoTokenizer.from_pretrained(out)`` and
    ``pipeline("fill-mask", model=out)`` load it. ``config.json`` also records, under
    ``"scratchmlm"``, the run's training settings and step.
    """
    transformers = _transformers()
    run_dir = Path(run_dir)
    out = run_dir / "transformers" if out is None else Path(out)
    _check_target(out)
    model, tokenizer, config, state = load_run(run_dir, checkpoint, "cpu")
    hf_model = to_transformers(model).eval()
    hf_model.config.scratchmlm = {"scratchmlm_version": __version__, "step": state["step"],
                                  "checkpoint": state.get("checkpoint", checkpoint),
                                  "valid_fingerprint": state.get("valid_fingerprint"),
                                  "train": config.to_dict()["train"]}
    with tempfile.TemporaryDirectory() as folder:         # the run's tokenizer.json, as the run saves it
        tokenizer.save(Path(folder) / "tokenizer.json")
        hf_tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(Path(folder) / "tokenizer.json"), pad_token="[PAD]", mask_token="[MASK]",
            unk_token="[UNK]", model_max_length=model.max_len)
    out.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(out)
    hf_tokenizer.save_pretrained(out)
    return out


def _check_target(out: Path) -> None:
    """``out`` must be new, empty, or an earlier transformers export (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise ScratchMLMError(f"--out {out} is a file; give a directory for the export.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    config = out / "config.json"
    earlier = config.is_file() and isinstance(data := read_json(config, "configuration"), dict) and "scratchmlm" in data
    if not earlier:
        raise ScratchMLMError(f"{out} already holds files that are not a scratchmlm transformers export; "
                              f"export into a new or empty directory.")

