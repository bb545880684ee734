"""What the tutorial notebooks share: fast mode, exercise checks, and the shipped demo model.

* ``FAST`` is True when the environment sets ``SCRATCHMLM_FAST=1``. The notebooks then use fewer
  steps and smaller samples (CI runs them that way); without it they run in full, each within the
  time budget that ``tutorials/README.md`` lists.
* ``check(name, got, expected)`` compares an exercise answer with the expected one and says which
  is which when they differ.
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

FAST_VARIABLE = "SCRATCHMLM_FAST"
DEMO_RUN = Path(__file__).resolve().parent / "demo"


def fast_mode() -> bool:
    """True when ``SCRATCHMLM_FAST`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(FAST_VARIABLE, "") not in ("", "0")


FAST = fast_mode()


class ExerciseError(AssertionError):
    """An exercise answer that does not match; the message says what was expected."""


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


def check(name: str, got, expected, tolerance: float = 0.0, hint: str = "") -> None:
    """Print ``✓ name`` when ``got`` matches ``expected`` (numbers within ``tolerance``, tensors
    elementwise), else raise ``ExerciseError`` naming both values and the hint."""
    if got is None or got is ...:
        raise ExerciseError(f"{name}: no answer yet; replace the ... in the exercise cell.")
    if not _close(got, expected, tolerance):
        message = f"{name}: expected {_describe(expected)}, got {_describe(got)}"
        if tolerance:
            message += f" (tolerance {tolerance:g})"
        raise ExerciseError(message + (f". Hint: {hint}" if hint else "."))
    print(f"✓ {name}")


SOLUTION_MARKER = re.compile(r"^\s*# (BEGIN|END) SOLUTION\b.*\n", re.MULTILINE)


def source_of(obj) -> str:
    """The source of a package function or class, without the assignment markers
    (``# BEGIN SOLUTION`` / ``# END SOLUTION``) that fence the parts students write."""
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
