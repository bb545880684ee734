"""scratchmlm: a from-scratch, pure-PyTorch BERT-style masked language model to learn from.

Two layers, visible in the folders:

- **The teaching core** (this folder): ``corpus`` -> ``tokenizer`` / ``subword_tokenizer`` ->
  ``batches`` (random windows; the frozen validation set, masked once) -> ``masking`` -> ``model/``
  -> ``step`` (the masked loss and one training step, with ``noam``'s schedule) -> ``loop`` (the
  training loop) -> ``evaluate`` and ``sample``. It imports nothing from the folders below.
- **The harness** (``harness/``): configuration, the ``Trainer`` (the same loop with a run directory,
  checkpoints, several processes and signals around it), export, plots and the command line.
- **The classroom tools** (``classroom/``): graded checks, student copies, the tutorials' helpers.
  They import the core, never the harness.

``tests/test_layers.py`` reads every import and fails on a cycle or an import that climbs a layer.

The public names below are loaded lazily (PEP 562): ``import scratchmlm`` alone imports no torch,
so ``scratchmlm --version`` answers at once and Ctrl-C during start-up reaches the command line's
own handler. ``scratchmlm.Trainer`` (or ``from scratchmlm import Trainer``) imports its module on
first use.
"""

import pkgutil
import sys
import types
from importlib import import_module

__version__ = "0.1.0"

# Each public name and the module that defines it.
_PUBLIC = {
    "ScratchMLMError": "errors",
    "load_text": "corpus", "read_text": "corpus", "split_text": "corpus", "tiny_shakespeare_path": "corpus",
    "CharTokenizer": "tokenizer",
    "random_windows": "batches", "evenly_spaced_windows": "batches", "FrozenValidationSet": "batches",
    "fingerprint": "batches",
    "BertMasker": "masking", "MaskedBatch": "masking", "IGNORE_INDEX": "masking",
    "BertMLM": "model", "Dropout": "model", "Embeddings": "model", "MultiHeadAttention": "model", "FeedForward": "model",
    "EncoderLayer": "model", "Encoder": "model", "Generator": "model", "TransformerMLM": "model",
    "noam_lr": "noam", "NoamScheduler": "noam",
    "masked_cross_entropy": "step", "train_step": "step", "StepResult": "step", "train_loop": "loop",
    "Trainer": "harness.trainer",
    "evaluate": "evaluate", "EvalResult": "evaluate", "eval_mode": "evaluate",
    "fill_mask": "sample", "fill_prompts": "sample", "load_run": "harness.run_dir",
    "export_run": "harness.run_dir", "load_pretrained": "harness.export",
    "ModelConfig": "harness.config", "TrainConfig": "harness.config", "RunConfig": "harness.config",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    """``scratchmlm.<name>``: import the module that defines a public name (or the submodule of that
    name), the first time it is used."""
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value      # later lookups skip this function
        return value
    if name in {module.name for module in pkgutil.iter_modules(__path__)}:
        return import_module(f".{name}", __name__)      # a submodule, e.g. scratchmlm.model, on first use
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package itself. Importing a submodule binds it as an attribute of the package; where a
    public name is also its module's name (``scratchmlm.evaluate``), the public function wins, as
    ``from .evaluate import evaluate`` made it win before the names were loaded lazily."""

    def __setattr__(self, name, value):
        if name in _PUBLIC and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
