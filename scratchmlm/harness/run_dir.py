"""A run directory: everything one training run writes, and reading it back.

    runs/seed/
      config.json        the RunConfig (model + train), with the data path made absolute
      run.json           provenance: the data's sha256 and the library versions that trained it
      tokenizer.json     a Hugging Face tokenizer file (``tokenizers.Tokenizer.from_file`` loads it)
      metrics.jsonl      one JSON record per line: baselines, training intervals, evaluations
      checkpoints/       last.pt (full resume state; written at step 0 too) and best.pt
      samples/ plots/    coloured samples (.txt, .html) and figures
      .lock              held by the one process writing the run

One writer per run: a run directory is created exclusively and locked (``flock``) while a
process trains in it, so two ``train`` commands can never interleave their metrics or
checkpoints. The lock disappears with its process, even after ``kill -9``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
from pathlib import Path

import torch

from .. import __version__
from ..errors import ScratchMLMError
from .build import build_model, check_model_memory, load_tokenizer, resolve_device
from .checkpoint import load_checkpoint, load_model_state
from .config import RunConfig, read_json
from .export import check_export_target, is_export, load_export, write_export

CHECKPOINT_KEYS = {"step": int, "device_type": str, "config": dict, "vocab": list, "valid_fingerprint": str,
                   "model": dict, "optimizer": dict, "scheduler": dict, "best_loss": float,
                   "evals_without_improvement": int, "rng": dict}
WEIGHT_KEYS = {"step": int, "vocab": list, "model": dict}
RNG_KEYS = ("batches", "masking", "cpu", "cuda")


def check_resume_state(state: dict, path: Path) -> None:
    """The ranges of a ``last.pt``'s fields, beyond their types (``CHECKPOINT_KEYS``): what a resumed
    run would act on (``step`` decides which metrics records are dropped) must make sense first."""
    def refuse(field: str, problem: str) -> None:
        raise ScratchMLMError(f"Checkpoint {path}: '{field}' {problem}; the file was edited or damaged. "
                              f"Use the run's other checkpoint, or start a new run.")

    step = state["step"]
    if not 0 <= step <= 2 ** 63 - 1:
        refuse("step", f"must be an integer >= 0, got {_short(step)}")
    if math.isnan(state["best_loss"]):
        refuse("best_loss", "is NaN")
    if state["evals_without_improvement"] < 0:
        refuse("evals_without_improvement", f"must be >= 0, got {state['evals_without_improvement']}")
    last_eval = state.get("last_eval_step")
    if last_eval is not None and (type(last_eval) is not int or not 0 <= last_eval <= step):
        refuse("last_eval_step", f"must be empty or a step from 0 to {step}, got {_short(last_eval)}")
    world_size = state.get("world_size", 1)
    if type(world_size) is not int or world_size < 1:
        refuse("world_size", f"must be an integer >= 1, got {_short(world_size)}")
    by_rank = state.get("rng_by_rank", [state["rng"]])
    if not isinstance(by_rank, list) or len(by_rank) != world_size:
        refuse("rng_by_rank", f"must list one random-number state per process ({world_size}), got {_short(by_rank)}")
    for rng in by_rank:
        if not isinstance(rng, dict) or not all(isinstance(rng.get(key), torch.Tensor) and
                                                rng[key].dtype == torch.uint8 for key in RNG_KEYS):
            refuse("rng_by_rank", f"must hold the states {', '.join(RNG_KEYS)} as byte tensors")

# What a run writes before its first checkpoint (and a start that never reached it may have left).
START_FILES = {".lock", "config.json", "run.json", "tokenizer.json", "metrics.jsonl", "checkpoints"}

# The fields each kind of metrics record must carry, and their types (None allowed for numbers).
NUMBER = (int, float, type(None))
RECORD_FIELDS = {
    "train": {"loss": NUMBER, "accuracy": NUMBER, "lr": NUMBER, "grad_norm": NUMBER},
    "eval": {"loss": NUMBER, "top1": NUMBER, "top5": NUMBER},
    "baseline": {"name": (str,), "loss": NUMBER, "top1": NUMBER, "top5": NUMBER},
}
# Fields a record may carry, checked when present: numbers, and the scores of each kind of position.
OPTIONAL_FIELDS = {"perplexity": NUMBER, "pseudo_perplexity": NUMBER, "count": NUMBER, "tokens_per_second": NUMBER,
                   "seconds": NUMBER, "time": NUMBER}
SCORE_FIELDS = {"count": NUMBER, "top1": NUMBER, "top5": NUMBER, "loss": NUMBER, "perplexity": NUMBER}


class RunDirectory:
    """Paths of a run directory, its exclusive creation, and the writer's lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None

    config = property(lambda self: self.path / "config.json")
    provenance = property(lambda self: self.path / "run.json")
    tokenizer = property(lambda self: self.path / "tokenizer.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    samples = property(lambda self: self.path / "samples")
    plots = property(lambda self: self.path / "plots")

    def checkpoint(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    # -- creating and locking -------------------------------------------------------------------
    def check_new(self) -> None:
        """Refuse a path that is a file or a directory that already holds something, unless it holds
        a run stopped before its first checkpoint (``stopped_before_first_checkpoint``)."""
        if self.path.exists() and not self.path.is_dir():
            raise ScratchMLMError(f"--run-dir {self.path} is a file, not a directory.")
        if self._holds_something() and not self.stopped_before_first_checkpoint():
            raise ScratchMLMError(f"Run directory {self.path} already exists. Use --resume to continue "
                                  f"that run, or choose another --run-dir.")

    def _holds_something(self) -> bool:
        return self.path.is_dir() and any(p.name != ".lock" for p in self.path.iterdir())

    def stopped_before_first_checkpoint(self) -> bool:
        """Whether this is a run that never wrote ``checkpoints/last.pt`` (killed during start-up, or
        its first save failed) and holds nothing but what its start wrote: nothing was trained, so
        it can only be started afresh, in place."""
        if not self.path.is_dir() or self.checkpoint("last").is_file():
            return False
        return all(p.name in START_FILES or p.name.endswith(".tmp") for p in self.path.iterdir())

    def create(self) -> bool:
        """Create the directory exclusively (an existing empty one is taken over) and lock it.

        A run stopped before its first checkpoint is cleared and taken over too; returns whether it was."""
        self.check_new()
        try:
            self.path.mkdir(parents=True, exist_ok=self.path.is_dir())
        except FileExistsError:
            raise ScratchMLMError(f"Run directory {self.path} was just created by another process; "
                                  f"choose another --run-dir.") from None
        self.lock()
        restarted = False
        if self._holds_something():      # another process got here first, or a run that never began
            if not self.stopped_before_first_checkpoint():
                self.unlock()
                raise ScratchMLMError(f"Run directory {self.path} already exists. Use --resume to continue "
                                      f"that run, or choose another --run-dir.")
            for path in sorted(self.path.rglob("*"), reverse=True):
                if path.name != ".lock":
                    path.rmdir() if path.is_dir() else path.unlink()
            restarted = True
        return restarted

    def lock(self) -> None:
        """Hold an exclusive lock on the run; a second writer gets a clear error."""
        if self._lock_file is not None:
            return
        handle = open(self.path / ".lock", "a+")
        try:
            _lock_exclusively(handle)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = "This process" if holder == str(os.getpid()) else \
                    f"Another scratchmlm process{' (pid ' + holder + ')' if holder else ''}"
                raise ScratchMLMError(f"{who} is training in {self.path}; wait for it to finish or stop it "
                                      f"first.") from None
            raise
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()      # closing the file releases the flock
            self._lock_file = None

    # -- provenance ------------------------------------------------------------------------------
    def write_provenance(self, data: str, text: str) -> None:
        """``run.json``: where the text came from, its sha256, and the versions that trained on it."""
        import numpy
        import tokenizers

        record = {"data": data, "data_sha256": text_sha256(text), "data_characters": len(text),
                  "versions": {"scratchmlm": __version__, "python": platform.python_version(),
                               "torch": torch.__version__, "numpy": numpy.__version__,
                               "tokenizers": tokenizers.__version__}}
        write_json_atomically(self.provenance, record)

    def check_data(self, text: str) -> None:
        """Refuse to continue on text that differs from the text the run began with."""
        if not self.provenance.is_file():
            return                       # a run written before run.json existed
        record = read_json(self.provenance, "run.json")
        expected = record.get("data_sha256") if isinstance(record, dict) else None
        if expected is not None and expected != text_sha256(text):
            raise ScratchMLMError(f"The data ({record.get('data')}) has changed since this run began: its "
                                  f"sha256 is no longer the one in {self.provenance}. Continue with the "
                                  f"original text, or start a new run.")


def _lock_exclusively(handle) -> None:
    """Lock an open file without waiting: ``flock`` on POSIX, ``msvcrt.locking`` on Windows."""
    try:
        import fcntl
    except ImportError:
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_json_atomically(path: Path, data) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


# -- metrics.jsonl --------------------------------------------------------------------------------

def _finite_or_none(value):
    """JSON has no NaN or infinity: non-finite floats are written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _clean(record):
    if isinstance(record, dict):
        return {key: _clean(value) for key, value in record.items()}
    return _finite_or_none(record)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended and flushed to disk as it happens."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(_clean(record), allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (a resumed run writes them again), atomically."""
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl``, each checked: a JSON object with a string ``type``, an
    integer ``step`` >= 0, and the fields its type needs. A last line cut short by a hard kill is
    dropped (it never completed); any other bad line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ScratchMLMError(f"{path} does not exist: is this a scratchmlm run directory?")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ScratchMLMError(f"{path} cannot be read ({getattr(error, 'strerror', None) or error}).") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if number == len(lines):   # a record cut short by a hard kill: it never completed
                break
            raise ScratchMLMError(f"{path} line {number} is not valid JSON.") from None
        problem = _record_problem(record)
        if problem:
            raise ScratchMLMError(f"{path} line {number}: {problem}. The file has been edited or damaged.")
        records.append(record)
    return records


def _record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    if not isinstance(record.get("type"), str):
        return "the record has no string 'type'"
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"'step' must be an integer >= 0, got {step!r}"
    for name, kinds in RECORD_FIELDS.get(record["type"], {}).items():
        problem = _field_problem(record.get(name), kinds, f"a {record['type']} record needs '{name}'")
        if problem:
            return problem
    for name, kinds in OPTIONAL_FIELDS.items():
        if name in record:
            problem = _field_problem(record[name], kinds, f"'{name}' must be")
            if problem:
                return problem
    if "by_kind" in record:
        by_kind = record["by_kind"]
        if not isinstance(by_kind, dict) or not all(isinstance(scores, dict) for scores in by_kind.values()):
            return f"'by_kind' must map each kind of position to its scores, got {_short(by_kind)}"
        for kind, scores in by_kind.items():
            for name, kinds in SCORE_FIELDS.items():
                if name in scores:
                    problem = _field_problem(scores[name], kinds, f"'by_kind.{kind}.{name}' must be")
                    if problem:
                        return problem
    return None


def _field_problem(value, kinds: tuple, what: str) -> str | None:
    """``what`` of type ``kinds``, or a sentence saying what it is instead (``None``: it is fine).
    A number must be finite: JSON's NaN / Infinity are not written by scratchmlm."""
    if isinstance(value, bool) or not isinstance(value, kinds):
        return f"{what} of type {kinds[0].__name__}, got {_short(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{what} a finite number, got {value!r}"
    return None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- reading a trained run back -------------------------------------------------------------------

def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "auto"):
    """A trained model and its tokenizer from a run directory: ``(model, tokenizer, config, state)``.

    The model is in eval mode on ``device``. ``checkpoint`` is ``best`` (lowest validation loss)
    or ``last``; a run that has not been evaluated yet has only ``last``.

    ``run_dir`` may also be a folder written by ``scratchmlm export`` (see ``export.py``); it holds
    one set of weights, which is returned whatever ``checkpoint`` says (``state["checkpoint"]``
    names the one it was exported from).
    """
    if is_export(run_dir):
        return load_export(run_dir, device)
    run = RunDirectory(run_dir)
    if not run.config.is_file():
        raise ScratchMLMError(f"{run.path} is not a scratchmlm run directory (no config.json).")
    config = RunConfig.load(run.config)
    config.model.validate()
    check_model_memory(config.model, run.config)     # before anything reads or builds more
    tokenizer = load_tokenizer(run.tokenizer)
    path = run.checkpoint(checkpoint)
    if checkpoint == "best" and not path.is_file() and run.checkpoint("last").is_file():
        raise ScratchMLMError(f"{run.path} has no best.pt yet (it has not been evaluated); "
                              f"use --checkpoint last.")
    state = load_checkpoint(path, required=WEIGHT_KEYS)
    if state["vocab"] != tokenizer.vocab:
        raise ScratchMLMError(f"{path} was saved with a different vocabulary than {run.tokenizer}.")
    if config.model.vocab_size != tokenizer.vocab_size:
        raise ScratchMLMError(f"{run.config} says vocab_size {config.model.vocab_size} but "
                              f"{run.tokenizer} has {tokenizer.vocab_size} tokens.")
    model = build_model(config.model, 0)
    load_model_state(model, state["model"], path)
    model.set_fused_attention(config.train.fused_attention)
    return model.to(resolve_device(device)).eval(), tokenizer, config, state


def export_run(run_dir: str | Path, out: str | Path | None = None, checkpoint: str = "best") -> Path:
    """Export a run's ``best`` or ``last`` checkpoint (``export.write_export``) into ``out`` (default
    ``<run_dir>/export``); returns ``out``. ``load_pretrained(out)`` or ``load_run(out)`` reads it back.
    """
    run_dir = Path(run_dir)
    out = run_dir / "export" if out is None else Path(out)
    check_export_target(out)            # before the run is read: a wrong --out is named at once
    model, tokenizer, config, state = load_run(run_dir, checkpoint, "cpu")
    return write_export(out, model, tokenizer, config, {**state, "checkpoint": state.get("checkpoint", checkpoint)})
