"""Checkpoints: written atomically, read safely, verified, complete enough to resume a run bit for bit.

Format (``FORMAT_VERSION`` 2). A checkpoint file is what ``torch.save`` writes for one plain dict:
the caller's keys at top level, plus ``"format_version"`` and ``"sha256"``. Its values may only be
dicts, lists, tuples, tensors, str, int, float, bool and None (no pickled classes), so the file
loads with ``torch.load(path, weights_only=True)``, which cannot execute code from the file.
``"sha256"`` is a digest of everything else in the dict: the dicts, lists and tuples are walked in
order, and every key and value is fed in with its type (tensors as dtype, shape and raw bytes;
other values by ``repr``), so ``1``, ``1.0``, ``True`` and ``"1"`` differ, and so do a ``[4]`` and
a ``[2, 2]`` tensor with the same bytes.

Writing. ``save_checkpoint`` has ``torch.save`` write into the temporary file of
``scratchmlm.files.write_atomically`` (beside the target; fsync, rename, directory fsync; mode
0o666 less the umask): an interruption leaves the old or the new checkpoint, never half of one.
Temporaries that earlier saves of the same target left when they were killed outright are removed
first (the run directory is locked: no other process writes there). A failure (disk full, no
permission, ...) keeps the old checkpoint and is a ``ScratchMLMError`` naming the path, the reason
and the fix.

Reading. ``load_checkpoint`` loads with ``weights_only=True`` and returns the dict the caller saved
(with ``"format_version"``; without ``"sha256"``). Every failure is a one-line ``ScratchMLMError``:
a missing path or a directory; a file that cannot be opened; a file ``torch.load`` cannot read
(truncated, random bytes, another format, pickled code: any exception it raises); a payload that is
not a scratchmlm dict, or of another format version (format 1 had no digest to verify); contents
that do not match the stored sha256 (a flipped bit); and, when asked, a missing key or a value of
the wrong type.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path

import torch

from ..errors import ScratchMLMError
from ..files import remove_leftover_temporaries, write_atomically

FORMAT_VERSION = 2

_USE_ANOTHER = "Use the run's other checkpoint (best.pt / last.pt) or retrain."
_ALLOWED = "dicts, lists, tuples, tensors, str, int, float, bool and None"


# -- writing ----------------------------------------------------------------------------------------

def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Atomically write ``state`` (plus ``format_version`` and ``sha256``) to ``path``."""
    path = Path(path)
    if not isinstance(state, dict):
        raise ScratchMLMError(f"A checkpoint is a dict, got a {type(state).__name__}; pass a dict to save_checkpoint.")
    body = {key: value for key, value in state.items() if key not in ("format_version", "sha256")}
    state = {"format_version": FORMAT_VERSION, **body}
    state["sha256"] = state_sha256(state)   # refuses values that are not of the allowed types
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ScratchMLMError(f"Could not create the directory {path.parent} for checkpoint {path}: "
                              f"{_os_reason(error)}. Fix the permissions of its parent.") from None
    remove_leftover_temporaries(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)   # in memory first: torch's own file writer reports a full disk as a RuntimeError
    return write_atomically(path, buffer.getvalue(), "checkpoint")


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


# -- the digest -------------------------------------------------------------------------------------

def state_sha256(state: dict) -> str:
    """The hex sha256 of ``state``'s canonical encoding (see the module docstring)."""
    digest = hashlib.sha256()
    _feed(digest, state, "state")
    return digest.hexdigest()


def _feed(digest, value, where: str) -> None:
    """Add ``value`` to ``digest``, each part as ``<type> <length>`` then its bytes; ``where`` names it."""
    if isinstance(value, torch.Tensor):
        raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        _feed_part(digest, "tensor", f"{value.dtype} {tuple(value.shape)}".encode())
        _feed_part(digest, "bytes", raw.tobytes())
    elif isinstance(value, dict):
        _feed_part(digest, "dict", str(len(value)).encode())
        for key, item in value.items():
            _feed(digest, key, f"a key of {where}")
            _feed(digest, item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        _feed_part(digest, "list" if isinstance(value, list) else "tuple", str(len(value)).encode())
        for index, item in enumerate(value):
            _feed(digest, item, f"{where}[{index}]")
    elif type(value) in (str, int, float, bool, type(None)):
        _feed_part(digest, type(value).__name__, repr(value).encode())
    else:
        raise ScratchMLMError(f"Cannot checkpoint {where}: it is a {type(value).__name__}, but a checkpoint holds "
                              f"only {_ALLOWED}; convert it (e.g. to a tensor or a list).")


def _feed_part(digest, kind: str, data: bytes) -> None:
    digest.update(f"{kind} {len(data)}\n".encode())
    digest.update(data)


# -- reading ----------------------------------------------------------------------------------------

def load_checkpoint(path: str | Path, map_location="cpu",
                    required: dict[str, type | tuple[type, ...]] | None = None) -> dict:
    """Load and verify a checkpoint; ``required`` maps keys that must be present to their type(s).

    Returns the dict that was saved, with ``format_version``. Any problem is a ``ScratchMLMError``.
    """
    path = Path(path)
    if not path.exists():
        raise ScratchMLMError(f"Checkpoint {path} does not exist. Check the path (a run keeps its checkpoints "
                              f"in checkpoints/best.pt and last.pt).")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ScratchMLMError(f"Checkpoint {path} is not a file (it is {kind}); pass the path of a .pt file.")
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ScratchMLMError(f"Checkpoint {path} cannot be opened: {_os_reason(error)}. "
                              f"Check the file's permissions.") from None
    with handle:
        try:
            with warnings.catch_warnings():    # torch warns before refusing some payloads; the error says it all
                warnings.simplefilter("ignore")
                state = torch.load(handle, map_location=map_location, weights_only=True)
        except Exception as error:   # whatever the bytes make torch.load do, the file is not readable
            raise ScratchMLMError(f"Checkpoint {path} cannot be read (truncated, corrupted or not a scratchmlm "
                                  f"checkpoint: {_short_reason(error)}). {_USE_ANOTHER}") from None
    _check_format(state, path)
    stored = state.pop("sha256", None)
    try:
        matches = stored == state_sha256(state)
    except Exception:   # a value of a type save_checkpoint never writes: the file was altered
        matches = False
    if not matches:
        raise ScratchMLMError(f"Checkpoint {path} is corrupted: its contents do not match the sha256 stored in it "
                              f"(the file changed after it was saved). {_USE_ANOTHER}")
    _check_required(state, required or {}, path)
    return state


def _check_format(state, path: Path) -> None:
    if not isinstance(state, dict) or "format_version" not in state:
        holds = "a dict without format_version" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ScratchMLMError(f"Checkpoint {path} is not a scratchmlm checkpoint (it holds {holds}); pass a "
                              f"checkpoint saved by scratchmlm.")
    version = state["format_version"]
    if version == 1:
        raise ScratchMLMError(f"Checkpoint {path} was written by an older scratchmlm (format 1) and cannot be "
                              f"verified (it has no sha256); retrain, or use a checkpoint written by this version.")
    if version != FORMAT_VERSION:
        raise ScratchMLMError(f"Checkpoint {path} has format_version {version!r}, but this scratchmlm reads format "
                              f"{FORMAT_VERSION}; use the scratchmlm version that wrote it, or retrain.")


def _check_required(state: dict, required: dict, path: Path) -> None:
    for key, expected in required.items():
        expected = expected if isinstance(expected, tuple) else (expected,)
        names = " or ".join(kind.__name__ for kind in expected)
        if key not in state:
            raise ScratchMLMError(f"Checkpoint {path} lacks {key!r} ({names}); use a checkpoint saved by scratchmlm "
                                  f"training (a run's checkpoints/best.pt or last.pt).")
        value = state[key]
        # True is an int to isinstance, but never a valid step or count.
        if not isinstance(value, expected) or (type(value) is bool and bool not in expected):
            raise ScratchMLMError(f"Checkpoint {path}: {key!r} should be {names}, got {type(value).__name__}; use a "
                                  f"checkpoint saved by scratchmlm training (a run's checkpoints/best.pt or last.pt).")


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Sentences of torch's advice, left out: loading with weights_only=False would run code from the file.
_ADVICE = ("weights only load failed", "false", "trust", "safe_globals", "please", "documentation")


def _short_reason(error: Exception) -> str:
    """``<ExceptionType>: <first informative sentence>``, one line, at most 200 characters."""
    text = _ANSI_ESCAPE.sub("", str(error)).split("WeightsUnpickler error:")[-1]
    sentences = [sentence.strip() for sentence in re.split(r"(?<=\.)\s+|\n", text)]
    kept = [sentence for sentence in sentences
            if sentence and not any(word in sentence.lower() for word in _ADVICE)]
    reason = type(error).__name__ + (f": {kept[0]}" if kept else "")
    reason = "".join(character if character.isprintable() else "?" for character in reason)
    return reason if len(reason) <= 200 else reason[:197] + "..."


def load_model_state(model: torch.nn.Module, weights: dict, path: Path) -> None:
    """``model.load_state_dict(weights)``, with a mismatch reported as the run's problem."""
    expected = model.state_dict()
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or name not in expected:
            continue                       # load_state_dict below names what is missing or unexpected
        if tensor.dtype != expected[name].dtype:   # load_state_dict would cast the bytes silently
            raise ScratchMLMError(f"{path}: {name} is stored as {str(tensor.dtype).replace('torch.', '')}, but the "
                                  f"model holds {str(expected[name].dtype).replace('torch.', '')}; the file is damaged "
                                  f"or was not written by scratchmlm. Use another checkpoint or export again.")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError) as error:
        raise ScratchMLMError(f"{path} does not fit the model in config.json: "
                              f"{str(error).strip().splitlines()[0][:300]}") from None
