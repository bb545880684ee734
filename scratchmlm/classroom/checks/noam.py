"""Part 5: the Noam learning-rate schedule, checked against frozen float64 reference rates.

Two things are checked: the table ``noam_lr(step)`` for a few ``(d_model, warmup, factor)``, and the
rates an optimizer actually uses under the scheduler, measured from the parameter updates of plain
SGD (each step starts from 0 with gradient 1, so the update is exactly ``-lr``).
"""

from __future__ import annotations

import torch

from . import adapters
from .guard import Failed, call
from .properties import generator
from .report import Item, Report, compare, grading
from .snapshots import bugs_of, load_snapshot

PART = "noam"
TITLE = "Part 5: Noam schedule"
POINTS = 10
# A float64 formula in any order agrees to ~1e-15 relative, even float32 to ~1e-7; the smallest
# change a bug makes is one step late near the peak (step 4000 of 4000): 1.2e-4 relative.
ATOL, RTOL, REASON = 0.0, 1e-6, ("float32 or float64 in any order agrees to < 1e-6 relative; a step off by one "
                                 "changes the rate by > 1e-5 relative")
GROUP_LRS = (0.5, 2.0)           # the optimizer's own lr per parameter group: the scheduler must ignore them

CAUSES = {
    "step_zero_used_first": "step 0 used first: right after construction the scheduler sets noam_lr(0) = 0, so "
                            "the first optimizer step does not move; after k scheduler.step() calls the "
                            "rate must be noam_lr(k + 1) (e.g. noam_lr(last_epoch + 1)), steps count from 1",
    "scheduler_one_step_ahead": "table shifted by one in the scheduler: after k scheduler.step() calls the "
                                "optimizer gets noam_lr(k + 2) instead of noam_lr(k + 1), so the rate of step 1 "
                                "is never used",
    "table_shifted_ahead": "table shifted by one: noam_lr(step) gives the rate of step + 1 (the step is "
                           "incremented, or counted from 0, inside the formula); steps are 1-based, so use "
                           "step itself",
    "table_shifted_back": "table shifted by one: noam_lr(step) gives the rate of step - 1 (so step 1 gets "
                          "lr(0) = 0); steps are 1-based, so use step itself",
    "d_model_scale_missing": "the d_model^-0.5 factor is missing: every rate is sqrt(d_model) times too large",
    "scaled_by_optimizer_lr": "the rate is multiplied by the optimizer's own lr (base_lrs): the Noam scheduler "
                              "ignores the optimizer's lr and sets every parameter group to noam_lr(step)",
}


def table_names(snapshot: dict[str, torch.Tensor]) -> list[str]:
    return sorted(name.split("/")[0] for name in snapshot if name.startswith("table") and name.endswith("/steps"))


def run_cases(snapshot: dict[str, torch.Tensor], run_noam, make_noam_scheduler) -> dict[str, torch.Tensor]:
    """Every case's output, keyed as in the snapshot. Used by the check and, on the reference, by
    ``make_snapshots``, so that both make exactly the same calls."""
    outputs = {}
    for table in table_names(snapshot):
        d_model, warmup = int(snapshot[f"{table}/d_model"]), int(snapshot[f"{table}/warmup"])
        factor = float(snapshot[f"{table}/factor"])
        outputs[f"{table}/lr"] = _rates(run_noam, [int(step) for step in snapshot[f"{table}/steps"]], d_model,
                                        warmup, factor)

    # One parameter per group, each group with its own (ignored) lr. Before every step the parameter
    # is 0 and its gradient 1, so plain SGD leaves it at exactly -lr: the rate the optimizer used.
    params = [torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in GROUP_LRS]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, GROUP_LRS)])
    scheduler = call(make_noam_scheduler, optimizer, int(snapshot["scheduler/d_model"]),
                     int(snapshot["scheduler/warmup"]), float(snapshot["scheduler/factor"]))
    if isinstance(scheduler, Failed):
        return {**outputs, "scheduler/first_lr": scheduler, "scheduler/lrs": scheduler}
    used = []
    for _ in range(int(snapshot["scheduler/steps"])):
        with torch.no_grad():
            for p in params:
                p.zero_()
                p.grad = torch.ones_like(p)
        optimizer.step()
        used.append([0.0 - float(p.detach()) for p in params])    # 0.0 - : no "-0" when lr is 0
        stepped = call(scheduler.step)
        if isinstance(stepped, Failed):
            return {**outputs, "scheduler/first_lr": stepped, "scheduler/lrs": stepped}
    used = torch.tensor(used, dtype=torch.float64)             # [steps, groups]: row k is step k + 1
    outputs["scheduler/first_lr"] = used[0]
    outputs["scheduler/lrs"] = used
    return outputs


def _rates(run_noam, steps: list[int], d_model: int, warmup: int, factor: float):
    """``noam_lr`` at each step as float64, or the first ``Failed`` (an exception, or not a number)."""
    rates = []
    for step in steps:
        rate = call(run_noam, step, d_model, warmup, factor)
        if isinstance(rate, Failed):
            return rate
        try:
            rates.append(float(rate))
        except (TypeError, ValueError, RuntimeError):
            return Failed(f"noam_lr({step}, ...) returned {type(rate).__name__}, not a number")
    return torch.tensor(rates, dtype=torch.float64)


PLANNED_ITEMS = 6
FORMULA = "noam_lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), with step counted from 1"
FRESH_CASES = 4


def check_noam(run_noam=None, make_noam_scheduler=None, seed: int | None = None) -> Report:
    """``run_noam`` and ``make_noam_scheduler`` (default: ``adapters.run_noam`` and
    ``adapters.make_noam_scheduler``) reach your schedule; pass your own functions with the same
    signatures to check an implementation that lives elsewhere (a notebook). ``seed`` draws the fresh
    settings of the property item (default: a fixed seed, so the report is the same on every run)."""
    run_noam = run_noam or adapters.run_noam
    make_noam_scheduler = make_noam_scheduler or adapters.make_noam_scheduler
    report = Report(PART, TITLE, POINTS)
    with grading(report, PLANNED_ITEMS):
        _check(report, run_noam, make_noam_scheduler, seed)
    return report


def _formula(step: int, d_model: int, warmup: int, factor: float) -> float:
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def _fresh_item(report: Report, run_noam, seed) -> Item:
    """noam_lr on fresh settings: random d_model, warmup and factor, at steps around the peak and far after."""
    rng = generator(seed)
    problems, shown = [], []
    for _ in range(FRESH_CASES):
        d_model = int(torch.randint(16, 1025, (1,), generator=rng))
        warmup = int(torch.randint(2, 5000, (1,), generator=rng))
        factor = float(torch.rand(1, generator=rng, dtype=torch.float64)) * 3 + 0.1
        steps = sorted({1, 2, warmup - 1, warmup, warmup + 1, 3 * warmup,
                        int(torch.randint(1, 10 * warmup, (1,), generator=rng))} - {0})
        got = _rates(run_noam, steps, d_model, warmup, factor)
        want = torch.tensor([_formula(s, d_model, warmup, factor) for s in steps], dtype=torch.float64)
        shown.append(f"({d_model}, {warmup}, {factor:.3g})")
        if isinstance(got, Failed):
            problems.append(str(got))
            break
        bad = ~torch.isclose(got, want, rtol=RTOL, atol=ATOL)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            problems.append(f"d_model {d_model}, warmup {warmup}, factor {factor:.4g}: {int(bad.sum())} of "
                            f"{len(steps)} steps differ; first at step {steps[i]}: expected {float(want[i]):.6g}, "
                            f"got {float(got[i]):.6g}")
    name = (f"noam_lr on fresh settings (d_model, warmup, factor) = {', '.join(shown)}: around the peak and "
            f"after it")
    named = [i.cause for i in report.items if not i.passed and i.cause in CAUSES.values()]
    cause = (named[0] if named else f"not a catalogued bug: {FORMULA}") if problems else ""
    return Item(name, not problems, "\n".join(problems), cause, f"rtol {RTOL:g}: {REASON}")


def _check(report: Report, run_noam, make_noam_scheduler, seed) -> None:
    snapshot = load_snapshot(PART)
    got = run_cases(snapshot, run_noam, make_noam_scheduler)

    tables = table_names(snapshot)
    for table in tables:
        steps = [int(step) for step in snapshot[f"{table}/steps"]]
        shown = (f"{steps[0]}..{steps[-1]}" if steps == list(range(steps[0], steps[-1] + 1))
                 else ", ".join(map(str, steps)))
        d_model, warmup = int(snapshot[f"{table}/d_model"]), int(snapshot[f"{table}/warmup"])
        item = report.add(compare(f"noam_lr(step) at steps {shown}, d_model {d_model}, warmup {warmup}, "
                                  f"factor {float(snapshot[f'{table}/factor']):g}", got[f"{table}/lr"],
                                  snapshot[f"expected/{table}/lr"], ATOL, RTOL, REASON,
                                  bugs_of(snapshot, f"{table}/lr", CAUSES)))
        if not item.passed and item.cause.startswith("no known bug"):
            wrong = ~torch.isclose(got[f"{table}/lr"], snapshot[f"expected/{table}/lr"], rtol=RTOL, atol=ATOL)
            first = steps[int(wrong.nonzero()[0])]
            item.cause = (f"not a catalogued bug: noam_lr first goes wrong at step {first} (warmup {warmup}, "
                          f"{'during the warm-up' if first < warmup else 'at the peak' if first == warmup else 'in the decay'}); "
                          f"{FORMULA}")
    report.add(_fresh_item(report, run_noam, seed))
    table_ok = all(item.passed for item in report.items)

    # The scheduler's rates come from noam_lr, so a wrong table also moves them. Name only the bugs
    # that also reproduce the table seen above: a wrong scheduler over a right table, or the table's bug.
    def reproduces_table(bug: str) -> bool:
        return all(isinstance(got[f"{table}/lr"], torch.Tensor) and torch.allclose(got[f"{table}/lr"], snapshot.get(f"bug/{bug}/{table}/lr",
                                                                   snapshot[f"expected/{table}/lr"]),
                                  rtol=RTOL, atol=ATOL) for table in tables)

    def scheduler_item(name: str, key: str):
        found = {bug: bug_output for bug, bug_output in bugs_of(snapshot, key, CAUSES).items()
                 if reproduces_table(bug)}
        item = report.add(compare(name, got[key], snapshot[f"expected/{key}"], ATOL, RTOL, REASON, found))
        if not item.passed and not table_ok and item.cause.startswith("no known bug"):
            item.cause = ("the scheduler's rates come from your noam_lr, which fails above: fix it first, "
                          "then check that after k scheduler.step() calls the rate is noam_lr(k + 1)")
        elif not item.passed and item.cause.startswith("no known bug"):
            item.cause = ("not a catalogued bug: noam_lr is right, so NoamScheduler is wrong: after k "
                          "scheduler.step() calls every parameter group's lr must be noam_lr(k + 1) with the "
                          "scheduler's own d_model, warmup and factor (see where the rates first differ above)")

    setting = (f"d_model {int(snapshot['scheduler/d_model'])}, warmup {int(snapshot['scheduler/warmup'])}, "
               f"factor {float(snapshot['scheduler/factor']):g}, {len(GROUP_LRS)} parameter groups")
    scheduler_item(f"scheduler: the first optimizer step (right after the scheduler is built) uses noam_lr(1); "
                   f"{setting}", "scheduler/first_lr")
    steps = int(snapshot["scheduler/steps"])
    scheduler_item(f"scheduler: the rates the optimizer uses at steps 1..{steps} (row k, after k "
                   f"scheduler.step() calls, must be noam_lr(k + 1)); {setting}", "scheduler/lrs")
