"""Opening what a user names: a path is resolved once, and only a regular file is ever read.

A symlink loop, a missing file, a directory, or a FIFO / device / socket (reading a FIFO waits
forever for a writer) is a ``ScratchMLMError`` that names the path and what it is, before anything
opens it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ScratchMLMError


def resolved(path: str | Path, what: str) -> Path:
    """``path`` made absolute with every symlink followed; a symlink loop is an error."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as error:     # Python < 3.13 raises RuntimeError("Symlink loop ...")
        raise ScratchMLMError(f"The {what} {path} cannot be resolved: {_reason(error)}; "
                              f"give the path of a real file.") from None


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` itself, after checking that it is a regular file that can be read without waiting."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ScratchMLMError(f"The {what} {path} does not exist; check the path.") from None
    except (OSError, ValueError) as error:
        raise ScratchMLMError(f"The {what} {path} cannot be opened: {_reason(error)}.") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
        raise ScratchMLMError(f"The {what} {path} cannot be read: it is not a regular file (it is {kind}); "
                              f"give the path of a file.")
    return path


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.errno == 40:    # ELOOP
        return "it is a symlink loop"
    if isinstance(error, RuntimeError) and "loop" in str(error).lower():
        return "it is a symlink loop"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
