"""Shared fixtures. The real corpus comes from $SCRATCHMLM_DATA_DIR (CI: ../shared/data)."""

import contextlib
import dataclasses
import io
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

from scratchmlm import CharTokenizer, load_text

REPO = Path(__file__).resolve().parents[1]

# The README's test command sets SCRATCHMLM_DATA_DIR; default to the shared data directory beside
# the checkout (where it exists) so a plain `pytest` in a development checkout works too.
if "SCRATCHMLM_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
    os.environ["SCRATCHMLM_DATA_DIR"] = str(REPO.parent / "shared" / "data")

os.environ.setdefault("TQDM_DISABLE", "1")

# Under pytest-xdist (`-n 2`) the test processes share the cores: one torch thread each (and in the
# processes they start), or their thread pools fight over two cores (the fast tier: 103 s that way,
# 52 s this way).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """The real Tiny Shakespeare (verified by sha256; downloaded if missing and online)."""
    return load_text("tinyshakespeare")


@pytest.fixture(scope="session")
def tokenizer(corpus_text) -> CharTokenizer:
    return CharTokenizer.from_text(corpus_text)


@pytest.fixture(scope="session")
def corpus_ids(corpus_text, tokenizer) -> torch.Tensor:
    return tokenizer.encode(corpus_text, parse_special=False)


@pytest.fixture
def small_text() -> str:
    return "the quick brown fox jumps over the lazy dog.\nTHE QUICK BROWN FOX!\n" * 20


# -- the command line, called in this process --------------------------------------------------------

@dataclasses.dataclass
class CliResult:
    """What ``scratchmlm ARGS`` gave: the exit status and everything it printed."""
    returncode: int
    stdout: str
    stderr: str


class _Pipe(io.BytesIO):
    """The bytes end of a captured stream: not a terminal (as a pipe is), unless ``tty``."""

    def __init__(self, tty: bool = False):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _python_warning_filters() -> None:
    """The filters a fresh ``python`` starts with (pytest's own would turn warnings into its report)."""
    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


def call_cli(*args, env: dict | None = None, cwd=None, stdout_tty: bool = False,
             stderr_tty: bool = False) -> CliResult:
    """``scratchmlm ARGS...`` as a subprocess would give it, but in this process (no second import
    of torch): ``scratchmlm.harness.cli.main(argv)`` with stdout and stderr captured as UTF-8 pipes
    (``isatty()`` is False unless ``stdout_tty`` / ``stderr_tty``), ``SystemExit`` (argparse) turned
    into the exit status, ``env`` entries set (a value of None unsets one) and ``cwd`` entered for
    the call. Afterwards every piece of global state a command may change is as it was before:
    environment, working directory, ``sys.argv``, the SIGINT / SIGTERM / SIGALRM handlers, warning
    filters, torch's global random generator, threads, grad mode and determinism flags.

    An exception that escapes ``main`` fails the test loudly: a user would have seen a traceback."""
    from scratchmlm.harness import cli

    argv = [os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg) for arg in args]
    out_bytes, err_bytes = _Pipe(stdout_tty), _Pipe(stderr_tty)
    # what Python gives a pipe under a UTF-8 locale: strict stdout, backslash-escaping stderr
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    grad = torch.is_grad_enabled()
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    default_dtype, matmul_precision = torch.get_default_dtype(), torch.get_float32_matmul_precision()
    try:
        with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            for name, value in (env or {}).items():
                patch.delenv(name, raising=False) if value is None else patch.setenv(name, str(value))
            if cwd is not None:
                patch.chdir(cwd)
            patch.setattr(sys, "argv", ["scratchmlm", *argv])
            _python_warning_filters()
            try:
                status = cli.main(argv)
            except SystemExit as exit_info:          # argparse: --help, --version, usage errors
                code = exit_info.code
                if code is not None and not isinstance(code, int):
                    print(code, file=sys.stderr)
                status = 0 if code is None else code if isinstance(code, int) else 1
            except KeyboardInterrupt:                # a real Ctrl-C of the test run: let it stop pytest
                raise
            except BaseException as error:           # noqa: BLE001  (reported below, with what was printed)
                out.flush(), err.flush()
                raise AssertionError(
                    f"scratchmlm {' '.join(argv)} raised {type(error).__name__}: {error} -- a user would have "
                    f"seen a traceback.\nstdout:\n{out_bytes.getvalue().decode(errors='replace')}\n"
                    f"stderr:\n{err_bytes.getvalue().decode(errors='replace')}") from error
    finally:
        for signum, handler in handlers.items():   # (only the main thread can install one)
            if signal.getsignal(signum) is not handler and threading.current_thread() is threading.main_thread():
                signal.signal(signum, handler)
        if dict(os.environ) != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        if os.getcwd() != saved_cwd:
            os.chdir(saved_cwd)
        torch.set_rng_state(rng_state)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
                != deterministic:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.set_default_dtype(default_dtype)
        torch.set_float32_matmul_precision(matmul_precision)
    out.flush(), err.flush()
    return CliResult(status, out_bytes.getvalue().decode("utf-8"), err_bytes.getvalue().decode("utf-8"))


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli("evaluate", run_dir, "--json", env={"NO_COLOR": "1"}, cwd=tmp_path)`` -> ``CliResult``:
    the command line in this process (see ``call_cli``). Session-scoped, so module-scoped fixtures
    that train a run can use it too."""
    return call_cli


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort: otherwise in file order), so that with `-n 2` the long
    ones start early and the two processes finish together instead of one waiting on a notebook."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
