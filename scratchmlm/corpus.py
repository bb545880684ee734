"""Getting the text: Tiny Shakespeare by name, or any UTF-8 file by path, and the train/valid split.

Tiny Shakespeare is never shipped with scratchmlm. It is looked up in the data directory
(``$SCRATCHMLM_DATA_DIR``, default ``~/.cache/scratchmlm``), checked against its sha256, and
downloaded there from its canonical URL when it is missing.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ScratchMLMError
from .files import regular_file, resolved, write_atomically

TINY_SHAKESPEARE = "tinyshakespeare"
TINY_SHAKESPEARE_FILE = "tinyshakespeare.txt"
TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9


def data_dir() -> Path:
    """The directory corpora are cached in: ``$SCRATCHMLM_DATA_DIR`` or ``~/.cache/scratchmlm``."""
    configured = os.environ.get("SCRATCHMLM_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "scratchmlm"


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _how_to_supply(target: Path) -> str:
    return (
        f"Download {TINY_SHAKESPEARE_URL} and save it as {target} "
        f"(or set SCRATCHMLM_DATA_DIR to a directory holding {TINY_SHAKESPEARE_FILE}), "
        "or train on any UTF-8 text file with --data PATH."
    )


def tiny_shakespeare_path(directory: Path | None = None, download: bool = True,
                          url: str = TINY_SHAKESPEARE_URL) -> Path:
    """Return the path of a verified Tiny Shakespeare, downloading it into ``directory`` if missing.

    A file whose sha256 differs is never used: the error names both digests. A download is written
    to a temporary file, verified, and only then renamed into place.
    """
    directory = Path(directory) if directory is not None else data_dir()
    target = directory / TINY_SHAKESPEARE_FILE
    if target.exists():
        actual = sha256_of_file(target)
        if actual != TINY_SHAKESPEARE_SHA256:
            raise ScratchMLMError(
                f"{target} has sha256 {actual}, expected {TINY_SHAKESPEARE_SHA256}: it is not the "
                f"Tiny Shakespeare corpus (truncated or edited?). Delete it and run again to "
                f"download a fresh copy. {_how_to_supply(target)}"
            )
        return target
    if not download:
        raise ScratchMLMError(f"Tiny Shakespeare is not in {directory}. {_how_to_supply(target)}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ScratchMLMError(
            f"Tiny Shakespeare is not in {directory} and could not be downloaded from {url} "
            f"({reason}). {_how_to_supply(target)}"
        ) from None
    actual = hashlib.sha256(payload).hexdigest()
    if actual != TINY_SHAKESPEARE_SHA256:
        raise ScratchMLMError(
            f"The download from {url} has sha256 {actual}, expected {TINY_SHAKESPEARE_SHA256}; "
            f"it was not saved. {_how_to_supply(target)}"
        )
    return write_atomically(target, payload, "corpus")


def read_text(path: str | Path) -> str:
    """Read a whole UTF-8 text file, with a clear error for a missing, empty or non-UTF-8 file."""
    path = regular_file(resolved(path, "data file"), "data file")
    raw = path.read_bytes()
    if not raw:
        raise ScratchMLMError(f"Data file {path} is empty; give a UTF-8 text file with some text.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScratchMLMError(
            f"Data file {path} is not UTF-8: byte {raw[error.start]:#04x} at byte offset "
            f"{error.start} cannot be decoded ({error.reason}). Convert it to UTF-8 first, "
            f"e.g. iconv -f latin1 -t utf-8."
        ) from None


def load_text(source: str | Path | None = None, download: bool = True) -> str:
    """The corpus text: Tiny Shakespeare for ``None`` or ``"tinyshakespeare"``, else the file at ``source``."""
    if source is None or str(source) == TINY_SHAKESPEARE:
        return read_text(tiny_shakespeare_path(download=download))
    return read_text(source)


@dataclass(frozen=True)
class Split:
    """The corpus cut once: ``train = text[:cut]``, ``valid = text[cut:]``, ``cut = int(0.9 * len(text))``."""

    train: str
    valid: str


def split_text(text: str, min_length: int = 1, train_fraction: float = TRAIN_FRACTION) -> Split:
    """Split ``text`` at ``int(train_fraction * len(text))``.

    ``min_length`` is the shortest split that is still usable (one training window); a shorter
    split is an error that names the lengths involved.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ScratchMLMError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}.")
    cut = int(train_fraction * len(text))
    split = Split(train=text[:cut], valid=text[cut:])
    for name, part in (("training", split.train), ("validation", split.valid)):
        if len(part) < min_length:
            raise ScratchMLMError(
                f"The {name} split has {len(part)} characters, fewer than one window of "
                f"{min_length}: the text ({len(text)} characters) is too short. Use a longer text "
                f"or a shorter --seq-len."
            )
    return split
