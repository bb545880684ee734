"""A check's report: item by item, what was compared, what came out, and the likely cause.

An ``Item`` is one graded comparison. When it fails it says where and by how much (shape, first
mismatching index, max error, expected vs got there) and, when a known bug reproduces the wrong
output exactly, names that bug in words. A ``Report`` is one part's items; it renders as text
(terminal), HTML (notebooks) and JSON (autograders).

Points: a part's points are split over its items by their ``weight`` (1 each unless a check says
otherwise), and a part scores the points of the items that pass (partial credit). With
``all_or_nothing`` a part scores all its points when every item passes, else none. A part still a
stub (``not_implemented``) scores 0 either way. ``Report.score`` is rounded to 2 decimals; with
every item passing it is exactly ``points``.
"""

from __future__ import annotations

import contextlib
import html
import json
from dataclasses import asdict, dataclass, field

import torch

from .guard import (PART_TIME_LIMIT, RAISED, YOUR_LINE, Failed, StudentCodeFailed, TimeLimitExceeded, failure,
                    time_limit)


class NotImplementedYet(Exception):
    """Raised inside a check when the code under test raised ``NotImplementedError``."""


@dataclass
class Item:
    name: str                    # what was checked, e.g. "output [2, 5, 16]"
    passed: bool
    detail: str = ""             # where it went wrong: shape, first mismatch, max error, expected vs got
    cause: str = ""              # the likely bug, in words
    tolerance: str = ""          # the tolerance used, and why
    weight: float = 1.0          # its share of the part's points, relative to the other items'

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    part: str                    # "masker", "attention", ...
    title: str                   # "Part 1: BERT masking"
    points: int                  # what the part is worth
    items: list[Item] = field(default_factory=list)
    not_implemented: str = ""    # the NotImplementedError message, when the code is still a stub
    all_or_nothing: bool = False  # True: all the points when every item passes, else none

    @property
    def passed(self) -> bool:
        return not self.not_implemented and bool(self.items) and all(item.passed for item in self.items)

    def item_points(self, item: Item) -> float:
        """What ``item`` is worth: the part's points times its share of the items' weights."""
        total = sum(i.weight for i in self.items)
        return round(self.points * item.weight / total, 2) if total > 0 else 0.0

    @property
    def score(self) -> float:
        """The points of the items that pass (partial credit), or with ``all_or_nothing`` all of the
        part's points when every item passes, else 0. Exactly ``points`` when everything passes."""
        if self.passed:
            return self.points
        if self.not_implemented or self.all_or_nothing or not self.items:
            return 0
        total = sum(item.weight for item in self.items)
        return round(self.points * sum(item.weight for item in self.items if item.passed) / total, 2)

    def add(self, item: Item) -> Item:
        self.items.append(item)
        return item

    def to_dict(self) -> dict:
        items = []
        for item in self.items:
            worth = self.item_points(item)
            items.append({**item.to_dict(), "points": worth,
                          "score": worth if item.passed and not self.all_or_nothing else
                          (worth if self.passed else 0)})
        return {"part": self.part, "title": self.title, "passed": self.passed, "score": self.score,
                "points": self.points, "all_or_nothing": self.all_or_nothing,
                "not_implemented": self.not_implemented or None, "items": items}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{self.title}: {verdict} ({self.score}/{self.points} points)"]
        if self.not_implemented:
            lines.append(f"  not implemented yet: {self.not_implemented}")
        for item in self.items:
            lines.append(f"  {'✓' if item.passed else '✗'} {item.name} [{self.item_points(item):g}]")
            if not item.passed:
                lines += [f"      {line}" for line in item.detail.splitlines() if line]
                if item.cause:
                    lines.append(f"      likely cause: {item.cause}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        rows = []
        if self.not_implemented:
            rows.append(f"<tr><td>✗</td><td>not implemented yet</td><td colspan='2'>"
                        f"{html.escape(self.not_implemented)}</td></tr>")
        for item in self.items:
            mark = "✓" if item.passed else "✗"
            detail = "" if item.passed else html.escape(item.detail).replace("\n", "<br>")
            cause = "" if item.passed else html.escape(item.cause)
            rows.append(f"<tr><td>{mark}</td><td>{html.escape(item.name)}</td><td>{detail}</td>"
                        f"<td><b>{cause}</b></td></tr>")
        return (f"<div><b style='color:{colour}'>{html.escape(self.title)}: "
                f"{'PASS' if self.passed else 'FAIL'} ({self.score}/{self.points} points)</b>"
                f"<table><tr><th></th><th>check</th><th>what differs</th><th>likely cause</th></tr>"
                f"{''.join(rows)}</table></div>")


def describe_mismatch(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str:
    """Where ``got`` first leaves ``expected`` and by how much (shapes must already agree)."""
    got64, expected64 = got.detach().double().cpu(), expected.detach().double().cpu()
    error = (got64 - expected64).abs()
    bad = ~torch.isclose(got64, expected64, rtol=rtol, atol=atol, equal_nan=False)
    index = tuple(int(i) for i in bad.nonzero()[0]) if bool(bad.any()) else ()
    finite_error = error[torch.isfinite(error)]
    max_error = float(finite_error.max()) if finite_error.numel() else float("nan")
    lines = [f"{int(bad.sum())} of {bad.numel()} values differ; max |error| {max_error:.3g}"]
    if not bool(torch.isfinite(got64).all()):
        lines.append(f"{int((~torch.isfinite(got64)).sum())} values are NaN or infinite")
    if index:
        lines.append(f"first at index {list(index)}: expected {float(expected64[index]):.6g}, "
                     f"got {float(got64[index]):.6g}")
    return "\n".join(lines)


def compare(name: str, got, expected: torch.Tensor, atol: float, rtol: float, reason: str,
            mutants: dict[str, tuple[str, torch.Tensor]] | None = None) -> Item:
    """One graded comparison of a tensor with the reference.

    ``mutants`` maps a known bug's name to ``(cause in words, the output that bug produces on the
    same input)``; when ``got`` is wrong and equals one of them, the item names that cause.
    """
    tolerance = f"atol {atol:g}, rtol {rtol:g}: {reason}"
    if isinstance(got, Failed):
        return Item(name, False, got.reason + (f"\n{YOUR_LINE}{got.where}" if got.where else ""), RAISED, tolerance)
    if not isinstance(got, torch.Tensor):
        return Item(name, False, f"expected a tensor, got {type(got).__name__}",
                    f"your code returned a {type(got).__name__} where a tensor of shape {list(expected.shape)} "
                    f"belongs (check the return statement, and return_weights' tuple)", tolerance)
    if tuple(got.shape) != tuple(expected.shape):
        cause = (f"the shape is wrong: expected {list(expected.shape)}, got {list(got.shape)}; follow the shapes "
                 f"in the docstring step by step (view/reshape/transpose)")
        for bug, (words, output) in (mutants or {}).items():
            if tuple(output.shape) == tuple(got.shape):
                cause = words
                break
        return Item(name, False, f"shape: expected {list(expected.shape)}, got {list(got.shape)}", cause,
                    tolerance)
    if torch.allclose(got.detach().double().cpu(), expected.double().cpu(), rtol=rtol, atol=atol):
        return Item(name, True, tolerance=tolerance)
    detail = describe_mismatch(got, expected, atol, rtol)
    return Item(name, False, detail, likely_cause(got, mutants or {}, atol, rtol), tolerance)


def likely_cause(got: torch.Tensor, mutants: dict[str, tuple[str, torch.Tensor]], atol: float,
                 rtol: float) -> str:
    """The words of the first known bug whose output ``got`` reproduces, or a generic hint."""
    got64 = got.detach().double().cpu()
    for words, output in mutants.values():
        if tuple(output.shape) == tuple(got64.shape) and torch.allclose(
                got64, output.double(), rtol=rtol, atol=atol, equal_nan=True):
            return words
    return "no known bug reproduces this output; compare your code with the formula in the docstring"


def name_one_bug(report: Report, causes: dict[str, str]) -> None:
    """When the frozen snapshots name exactly one catalogued bug, it is the likely cause of every
    failed item of the part (a bug that reproduces the snapshot outputs exactly explains the rest)."""
    named = {item.cause for item in report.items if not item.passed and item.cause in causes.values()}
    if len(named) == 1:
        cause, = named
        for item in report.items:
            if not item.passed and item.cause != RAISED:
                item.cause = cause


@contextlib.contextmanager
def grading(report, planned_items: int):
    """Run a check's body for ``report``: a stub becomes ``not_implemented``; anything else that
    escapes becomes one failed item worth the items still ungraded (``planned_items`` in all), so a
    crash never scores more than the items that were really graded."""
    try:
        with time_limit(PART_TIME_LIMIT, f"the {report.part} check"):
            yield report
    except NotImplementedError as error:
        report.not_implemented = str(error) or "NotImplementedError"
    except (Exception, TimeLimitExceeded) as error:
        failed = error.failed if isinstance(error, StudentCodeFailed) else failure(error)
        remaining = max(planned_items - len(report.items), 1)
        report.add(Item(f"the rest of the check ({remaining} item{'s' if remaining > 1 else ''}) could not run",
                        False, f"{failed.reason}" + (f"\n{YOUR_LINE}{failed.where}" if failed.where else ""),
                        "your code raised an exception, or returned something the check cannot use: "
                        "fix that first", weight=remaining))
