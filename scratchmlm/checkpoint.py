"""Checkpoints: written atomically, read safely, complete enough to resume a run bit for bit.

A checkpoint is a dict of plain types and tensors only (no pickled classes), so it loads with
``torch.load(weights_only=True)``, which cannot execute code from the file. It is written to a
temporary file in the same directory, flushed to disk (fsync), then renamed over the old one:
an interruption leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import ScratchMLMError

FORMAT_VERSION = 1


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Atomically write ``state`` to ``path`` (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format_version": FORMAT_VERSION, **state}
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False)
    try:
        with handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing, truncated or foreign file is a
    ``ScratchMLMError`` that says so."""
    path = Path(path)
    if not path.is_file():
        raise ScratchMLMError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ScratchMLMError(
            f"Checkpoint {path} cannot be read (truncated or not a scratchmlm checkpoint: "
            f"{first_line[:200]}). Use another checkpoint of the run (best.pt / last.pt) or retrain."
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ScratchMLMError(f"{path} is not a scratchmlm checkpoint (format {FORMAT_VERSION}).")
    return state
