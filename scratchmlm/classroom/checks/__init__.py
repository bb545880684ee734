"""Graded checks for the classroom assignments: one per part, each a ``Report`` that says item by
item what differs and, for a known bug, which one it probably is.

    from scratchmlm.classroom.checks import check_attention
    check_attention()                         # a Report: text, HTML in a notebook, .to_json()

    scratchmlm check attention [--json]       # the same from a terminal

Every check reaches your code only through ``scratchmlm/classroom/checks/adapters.py``.

| part | function | points |
|---|---|---|
| 1 masking | ``check_masking`` | 20 |
| 2 attention | ``check_attention`` | 25 |
| 3 encoder layer | ``check_encoder`` | 20 |
| 4 loss and step | ``check_step`` | 25 |
| 5 Noam | ``check_noam`` | 10 |

Each check takes the functions that reach your code (default: ``adapters``) and ``seed`` (the fresh
random inputs of its property items; default a fixed seed, so your report is the same every run).
A part's points are split over its items (partial credit, ``Report.score``); set
``report.all_or_nothing = True`` (``scratchmlm check --all-or-nothing``) for all or none per part.
An exception or a runaway loop in your code fails the item it happened in, with its reason and your
last line (see ``guard.py``); the other items and parts are still graded.
"""

from __future__ import annotations

import functools

from . import attention, encoder, masking, noam, step
from .report import Item, Report


def _graded(module):
    """The module's check; a ``NotImplementedError`` raised by the code under test becomes a failed
    report that quotes its message, instead of a traceback."""
    check = getattr(module, f"check_{module.PART}")

    @functools.wraps(check)
    def run(*your_code, **options) -> Report:
        try:
            return check(*your_code, **options)
        except NotImplementedError as error:
            return Report(module.PART, module.TITLE, module.POINTS,
                          not_implemented=str(error) or "NotImplementedError")
    return run


check_masking = _graded(masking)
check_attention = _graded(attention)
check_encoder = _graded(encoder)
check_step = _graded(step)
check_noam = _graded(noam)

PARTS = {"masking": check_masking, "attention": check_attention, "encoder": check_encoder,
         "step": check_step, "noam": check_noam}


def check(part: str, seed: int | None = None) -> Report:
    """The report of one part: ``masking``, ``attention``, ``encoder``, ``step`` or ``noam``."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; the parts are {', '.join(PARTS)}")
    return PARTS[part](seed=seed)


__all__ = ["Item", "Report", "PARTS", "check", "check_masking", "check_attention", "check_encoder",
           "check_step", "check_noam"]
