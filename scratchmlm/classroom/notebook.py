"""What the tutorial notebooks share: fast mode, exercise checks, and the shipped demo model.

* ``FAST`` is True when the environment sets ``SCRATCHMLM_FAST=1``. The notebooks then use fewer
  steps and smaller samples (CI runs them that way); without it they run in full, each within the
  time budget that ``tutorials/README.md`` lists.
* ``check(name, got, expected)`` says whether an exercise answer is right; a wrong one is told
  what it got and the hint, never the expected value (students' copies of the notebooks keep the
  check cells, so the answer must not be one failed check away).
* ``use_threads()`` sets torch's CPU thread count for a notebook: 1 unless ``SCRATCHMLM_THREADS``
  says otherwise. The notebooks' tensors are small, and on a 2-core machine where anything else is
  running, torch's default of one thread per core made notebook 06 six times slower than one
  thread (``tutorials/README.md`` has the measurements).
* ``demo_run_dir()`` is a small trained run that ships with the package (``scratchmlm/demo``), so
  that a notebook can show a trained model without a 20-minute run.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from pathlib import Path

import torch

from ..errors import ScratchMLMError

FAST_VARIABLE = "SCRATCHMLM_FAST"
THREADS_VARIABLE = "SCRATCHMLM_THREADS"
DEMO_RUN = Path(__file__).resolve().parents[1] / "demo"


def fast_mode() -> bool:
    """True when ``SCRATCHMLM_FAST`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(FAST_VARIABLE, "") not in ("", "0")


FAST = fast_mode()


def use_threads() -> int:
    """Set torch's intra-op thread count to ``$SCRATCHMLM_THREADS`` (default 1) and return it.

    One thread is never much slower on these small tensors and does not collapse when another
    process wants the same cores; set ``SCRATCHMLM_THREADS`` to the number of cores on a machine
    of your own.
    """
    text = os.environ.get(THREADS_VARIABLE, "").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise ScratchMLMError(f"{THREADS_VARIABLE}={text!r}: set it to a whole number of threads, 1 or more.")
    torch.set_num_threads(int(text))
    return int(text)


class ExerciseError(AssertionError):
    """An exercise answer that does not match; the message says what was given, never the answer."""


def _close(got, expected, tolerance: float) -> bool:
    if isinstance(expected, torch.Tensor) or isinstance(got, torch.Tensor):
        got, expected = torch.as_tensor(got), torch.as_tensor(expected)
        if got.shape != expected.shape:
            return False
        if expected.is_floating_point() or got.is_floating_point():
            return torch.allclose(got.double(), expected.double(), rtol=0.0, atol=tolerance)
        return torch.equal(got, expected)
    if isinstance(expected, float) or isinstance(got, float):
        return (isinstance(got, (int, float)) and not isinstance(got, bool)
                and math.isfinite(got) and abs(got - expected) <= tolerance)
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(expected) and all(_close(g, e, tolerance) for g, e in zip(got, expected))
    return got == expected


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 8:
            return f"tensor {value.tolist()} ({value.dtype})"
        return f"tensor of shape {list(value.shape)} ({value.dtype})"
    return repr(value)


def _shape_note(got, expected) -> str:
    """What is wrong with the *form* of ``got`` (a shape or a type), which gives no value away."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"; the answer is a tensor, not a {type(got).__name__}"
        if got.shape != expected.shape:
            return f"; the answer has shape {list(expected.shape)}"
    return ""


def check(name: str, got, expected, tolerance: float = 0.0, hint: str = "") -> None:
    """Print ``✓ name`` when ``got`` matches ``expected`` (numbers within ``tolerance``, tensors
    elementwise), else raise ``ExerciseError`` with ``got`` and the hint. The expected value is
    never shown: a learner must not be able to read the answer off a failed check."""
    if got is None or got is ...:
        raise ExerciseError(f"{name}: no answer yet; replace the ... in the exercise cell.")
    if not _close(got, expected, tolerance):
        message = f"{name}: not right yet: your answer is {_describe(got)}{_shape_note(got, expected)}"
        if tolerance:
            message += f" (it must be within {tolerance:g} of the answer)"
        raise ExerciseError(message + (f". Hint: {hint}" if hint else "."))
    print(f"✓ {name}")


SOLUTION_MARKER = re.compile(r"^\s*# ((BEGIN|END) SOLUTION|HINT)\b.*\n", re.MULTILINE)


def source_of(obj) -> str:
    """The source of a package function or class, without the assignment markers
    (``# BEGIN SOLUTION`` / ``# END SOLUTION``) that fence the parts students write, nor the
    ``# HINT`` lines their stubs keep."""
    return SOLUTION_MARKER.sub("", inspect.getsource(obj))


def show_source(obj) -> None:
    """Print ``source_of(obj)``: open a piece of the package up in a notebook."""
    print(source_of(obj))


def demo_run_dir() -> Path:
    """The shipped demo run (weights, config, tokenizer, metrics); ``load_run`` reads it."""
    if not (DEMO_RUN / "config.json").is_file():
        raise FileNotFoundError(f"The demo model is missing from {DEMO_RUN}; reinstall scratchmlm "
                                f"(pip install -e .) from a complete checkout.")
    return DEMO_RUN
