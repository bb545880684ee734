"""Files: reading what a user names, and replacing a file all at once.

Reading. A path is resolved once, and only a regular file is ever read. A symlink loop, a missing
file, a directory, or a FIFO / device / socket (reading a FIFO waits forever for a writer) is a
``ScratchMLMError`` that names the path and what it is, before anything opens it.

Writing. Every file scratchmlm writes whole (configurations, checkpoints, tokenizers, exports,
the downloaded corpus) goes through :func:`write_atomically`: a crash or a full disk leaves the
old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable

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


def write_atomically(path: str | Path, contents: bytes | str | Callable[[BinaryIO], object],
                     what: str = "file") -> Path:
    """Replace ``path`` with ``contents`` all at once; returns ``path``.

    ``contents``: bytes, a ``str`` (written as UTF-8), or a function that writes into the open
    binary file it is given (``lambda file: torch.save(state, file)``).

    1. The contents go to a new temporary ``<name><8 random hex digits>.tmp`` in the same directory
       (so that step 3 stays on one file system), created exclusively with mode 0o666 less the
       umask, like any new file.
    2. They are flushed and fsync'ed: on the disk before the file takes the name.
    3. ``os.replace`` renames the temporary to ``path`` in one step (POSIX and Windows).
    4. The directory is fsync'ed, so that the rename itself survives a crash.

    Any failure before step 3 (an exception, Ctrl-C) removes the temporary and leaves ``path`` as
    it was. An ``OSError`` is a one-line ``ScratchMLMError`` naming ``what`` (``"checkpoint"``,
    ``"tokenizer"``, ...), the path, the reason and the fix; anything else is raised as it is.
    """
    path = Path(path)
    existed = path.exists()
    temporary = path.with_name(f"{path.name}{secrets.token_hex(4)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with open(descriptor, "wb") as handle:
                if callable(contents):
                    contents(handle)
                else:
                    handle.write(contents.encode("utf-8") if isinstance(contents, str) else contents)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as error:
        kept = f"the previous {what} is kept" if existed else "nothing was written"
        raise ScratchMLMError(f"Could not write {what} {path}: {_reason(error)} ({kept}). "
                              f"{_fix(error, path.parent)}") from None
    _sync_directory(path, what)
    return path


def _sync_directory(path: Path, what: str) -> None:
    """fsync ``path``'s directory (where the system can: Windows cannot open a directory)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        if error.errno in (errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL)):
            return      # a file system that cannot sync a directory: the rename is as durable as it gets
        raise ScratchMLMError(f"The {what} {path} was written, but {path.parent} could not be synced to disk "
                              f"({_reason(error)}); it may be lost in a crash. Check the disk.") from None


def remove_leftover_temporaries(path: str | Path) -> None:
    """Delete the temporaries that earlier :func:`write_atomically` calls for ``path`` left behind
    when they were killed outright (``<name>``, 8 characters of ``[a-z0-9_]``, ``.tmp``). Only for a
    file no other process writes at the same time (one in a locked run directory): a temporary
    being written is indistinguishable from a leftover."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"[a-z0-9_]{8}\.tmp")
    for candidate in path.parent.iterdir():
        if pattern.fullmatch(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)


def _fix(error: OSError, directory: Path) -> str:
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "Free some disk space and try again."
    if error.errno == errno.ENOENT:
        return f"Check that the directory {directory} exists."
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Fix the permissions of {directory}, or write somewhere else."
    return f"Check the disk and the directory {directory}."
