"""Part 4: the masked loss and the training step, checked against frozen float64 reference values.

The step runs on stand-ins, so that only its own wiring is graded: a small model made of torch
primitives (an embedding and one linear layer over the whole row) instead of your encoder, a
masker that always returns the same ``MaskedBatch`` instead of your masker, and a ``LambdaLR``
over a known table instead of your Noam schedule. The stand-in optimizer is Adam that also records,
at each ``optimizer.step()``, the learning rate it is about to use and the gradient norm it sees.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F

from ...masking import IGNORE_INDEX, MaskedBatch
from . import adapters
from .guard import Failed, call
from .properties import generator
from .report import Item, Report, compare, grading
from .snapshots import bugs_of, load_snapshot

PART = "step"
TITLE = "Part 4: masked loss and training step"
POINTS = 25

# A student may take the cross-entropy in float32 (logits.float(), as mixed-precision training does)
# or float64: the two agree to ~1e-7 relative; a bug that shows here moves it > 4e-2.
LOSS_TOL = (1e-8, 1e-5, "a cross-entropy summed in float32 or in float64 agrees to "
                        "~1e-7 relative; a bug that shows here moves the value by > 4e-2 relative")
# Zero means zero: an unselected position must not enter the loss at all, in any precision.
ZERO_TOL = (0.0, 0.0, "an unselected position must not enter the loss, so its gradient is exactly 0")
# Counts are integers.
COUNT_TOL = (0.0, 0.0, "a count is an integer")
# The rates are table entries times the base lr: exact in any implementation.
LR_TOL = (0.0, 1e-12, "each rate is a table entry times the base lr, exact in any implementation")
# clip_grad_norm_ divides by (norm + 1e-6), a hand-written clip by the norm: < 1e-5 relative apart.
NORM_TOL = (1e-9, 1e-4, "clip_grad_norm_ divides by norm + 1e-6, a hand-written clip by the norm: they "
                        "differ by < 1e-5 relative; a bug that shows here moves the norm by > 1e-2 relative")
# Adam steps of size ~lr from gradients known to ~1e-5 relative (the two lines above) move a
# parameter by < 1e-7; the smallest bug (gradients accumulating) moves one by > 4e-5 in 3 steps.
PARAM_TOL = (1e-6, 1e-6, "Adam steps from gradients that agree to ~1e-5 relative land < 1e-7 apart; the "
                         "smallest bug moves a parameter by > 4e-5")

OVERFIT_STEPS = 100          # the stand-in model memorises the batch's 7 selected positions in ~10 steps
OVERFIT_LR = 0.05
OVERFIT_CLIP = 1.0
OVERFIT_THRESHOLD = 0.01     # from 2.8 at the start; the reference reaches < 1e-6, a step that learns nothing stays at 2.8

CAUSES = {
    "loss_over_all_positions": "the labels at unselected positions are not ignored: positions whose label is "
                               "-100 enter the loss (e.g. labels.clamp(min=0) to make gather work, then summing "
                               "every position); only positions with label != -100 may be scored",
    "mean_over_all_positions": "the loss is divided by the number of all positions (batch * seq) instead of "
                               "the number of selected positions: divide the sum by max(count, 1)",
    "gradient_at_unselected_positions": "the loss value is right but unselected positions still get a gradient: "
                                        "they were masked out where autograd cannot see it (e.g. set to 0 in place "
                                        "under torch.no_grad()); mask with torch.where or multiply by the mask, or "
                                        "select the positions before the cross-entropy",
    "clipping_after_optimizer_step": "the gradient is clipped after optimizer.step(): the step used the unclipped "
                                     "gradient; call clip_grad_norm_ between loss.backward() and optimizer.step()",
    "scheduler_stepped_before_optimizer": "scheduler.step() is called before optimizer.step(): every step uses "
                                          "the next step's learning rate and the first rate is never used",
    "scheduler_stepped_twice": "scheduler.step() is called twice per step: the schedule runs at double speed "
                               "(steps 1, 2, 3 use the rates of steps 1, 3, 5)",
    "gradients_accumulate": "the gradients are never cleared: each loss.backward() adds to the previous steps' "
                            "gradients; call optimizer.zero_grad() once per step (after optimizer.step())",
    "cannot_overfit_one_batch": "the parameters never change, so the model cannot even overfit one batch: "
                                "optimizer.step() is missing, or the gradients are gone before it "
                                "(optimizer.zero_grad() between loss.backward() and optimizer.step()), or the loss "
                                "was cut from the model's graph (.item(), .detach())",
}
# Words for failures no known bug reproduces, where the item itself says what must hold.
NOT_LEARNING = ("the step does not learn one fixed batch: check that loss.backward(), clipping and "
                "optimizer.step() act on the model's parameters in this order")

NUM_STEPS = 3
PLANNED_ITEMS = 18           # 16 snapshot values, the fresh loss, the overfit
# Where to look, per value, when no catalogued bug explains a wrong one.
HINTS = {
    "loss/loss": "the loss is the mean over the selected positions (label != -100) of -log softmax(logits) at "
                 "the label: F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)",
    "loss/count": "the count is the number of positions whose label is not -100",
    "loss/grad_unselected": "an unselected position must not enter the loss at all",
    "loss/grad_selected": "the gradient follows from the loss: check the loss's formula and that it stays in "
                          "autograd's graph",
    "nothing_selected/loss": "with no position selected return a loss of 0 (e.g. sum / max(count, 1)), not NaN",
    "nothing_selected/count": "with no position selected the count is 0",
    "step/parameters_after_1": "the order of the eight lines of train_step: mask, forward, loss, backward, "
                               "clip, optimizer.step(), scheduler.step(), zero_grad",
    f"step/parameters_after_{NUM_STEPS}": "the order of the eight lines of train_step: mask, forward, loss, "
                                          "backward, clip, optimizer.step(), scheduler.step(), zero_grad",
    "step/used_lr": "scheduler.step() once per step, after optimizer.step()",
    "step/seen_grad_norm": "clip_grad_norm_(model.parameters(), clip_norm) between loss.backward() and "
                           "optimizer.step()",
    "step/schedule_position": "scheduler.step() exactly once per train_step call",
    "step/result/loss": "return the step's loss (the value before the update), detached",
    "step/result/grad_norm": "return the norm clip_grad_norm_ returns (before clipping)",
    "step/result/lr": "return the learning rate optimizer.step() used (read before scheduler.step())",
    "step/result/num_scored": "return the count masked_cross_entropy gives",
    "step/result/num_correct": "count the selected positions whose argmax equals the label",
}


class StandInModel(torch.nn.Module):
    """Logits from torch primitives: embed each token, then one linear map from the whole row to every
    position's logits (so a position's prediction can depend on its context, and one batch can be
    memorised)."""

    def __init__(self, vocab_size: int, seq_len: int, d: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, d)
        self.mix = torch.nn.Linear(seq_len * d, seq_len * vocab_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        batch, seq = inputs.shape
        return self.mix(self.embed(inputs).flatten(1)).view(batch, seq, -1)


class RecordingAdam(torch.optim.Adam):
    """Adam that records, at each ``step()``, the learning rate it is about to use and the global norm
    of the gradients it sees (after clipping, if clipping came first)."""

    def __init__(self, params, **options):
        super().__init__(params, **options)
        self.used_lrs: list[float] = []
        self.seen_grad_norms: list[float] = []

    def step(self, closure=None):
        grads = [p.grad.detach().double() for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        self.used_lrs.append(float(self.param_groups[0]["lr"]))
        self.seen_grad_norms.append(float(torch.cat([g.flatten() for g in grads]).norm()) if grads else 0.0)
        return super().step(closure)


def stand_in_model(snapshot: dict[str, torch.Tensor]) -> StandInModel:
    embed, mix_weight = snapshot["step/weights/embed"], snapshot["step/weights/mix_weight"]
    vocab_size, d = embed.shape
    model = StandInModel(vocab_size, mix_weight.shape[1] // d, d).double().train()
    with torch.no_grad():
        model.embed.weight.copy_(embed)
        model.mix.weight.copy_(mix_weight)
        model.mix.bias.copy_(snapshot["step/weights/mix_bias"])
    return model


def stand_in_masker(snapshot: dict[str, torch.Tensor]):
    """A masker that ignores ``rng`` and always returns the batch stored in the snapshot."""
    batch = [snapshot[f"step/masked/{name}"].long() for name in ("inputs", "labels", "kinds")]

    def masker(ids, rng):
        return MaskedBatch(*(t.clone() for t in batch))
    return masker


def stand_in_schedule(optimizer: torch.optim.Optimizer, table: list[float]):
    """LambdaLR over a known table: step k (1-based) uses base_lr * table[k - 1]."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: table[min(done, len(table) - 1)])


def _flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


def _left_in_grad(model: torch.nn.Module) -> float:
    return sum(float((p.grad.detach().double() ** 2).sum()) for p in model.parameters() if p.grad is not None)


def _as_float64(value):
    """A number as a float64 scalar tensor; a ``Failed`` (or something that is not a number) as a ``Failed``."""
    if isinstance(value, Failed):
        return value
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().double().cpu().reshape(())
        return torch.tensor(float(value), dtype=torch.float64)   # not as_tensor: a Python float would become float32
    except (TypeError, ValueError, RuntimeError):
        return Failed(f"expected a number (a Python number or a one-element tensor), got {type(value).__name__}"
                      + (f" of shape {list(value.shape)}" if isinstance(value, torch.Tensor) else ""))


def masked_loss(model: torch.nn.Module, masked: MaskedBatch) -> float:
    """The masked cross-entropy of ``model`` on ``masked``, written out here (not yours)."""
    with torch.no_grad():
        logits = model(masked.inputs)
        return float(F.cross_entropy(logits.flatten(0, 1).double(), masked.labels.flatten(),
                                     ignore_index=IGNORE_INDEX))


@contextlib.contextmanager
def one_thread():
    """Run on one CPU thread: the tensors here are tiny, and on a busy machine waking a second thread
    for each of them costs 10-50 times the arithmetic (0.1 s vs several seconds for the check)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_cases(snapshot: dict[str, torch.Tensor], run_masked_cross_entropy, run_train_step) -> dict[str, torch.Tensor]:
    """Every snapshot-compared output, keyed as in the snapshot. Used by the check and, on the
    reference, by ``make_snapshots``, so that both make exactly the same calls."""
    with one_thread():
        return _run_cases(snapshot, run_masked_cross_entropy, run_train_step)


def _run_cases(snapshot, run_masked_cross_entropy, run_train_step) -> dict[str, torch.Tensor]:
    outputs = {}
    # -- the loss on fixed logits and labels, and its gradient with respect to the logits
    for case in ("loss", "nothing_selected"):
        logits = snapshot[f"{case}/logits"].clone().requires_grad_(True)
        labels = snapshot[f"{case}/labels"].long()
        result = call(run_masked_cross_entropy, logits, labels.clone())
        if isinstance(result, Failed) or not (isinstance(result, tuple) and len(result) == 2):
            failed = result if isinstance(result, Failed) else Failed(
                f"masked_cross_entropy must return (loss, count), got {type(result).__name__}")
            for key in ("loss", "count", "grad_selected", "grad_unselected"):
                outputs[f"{case}/{key}"] = failed
            continue
        loss, count = result
        outputs[f"{case}/loss"] = _as_float64(loss)
        outputs[f"{case}/count"] = _as_float64(count)
        if case == "nothing_selected":
            continue
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            grad, = torch.autograd.grad(loss, logits)
        else:                                    # cut from the graph: no gradient reaches the logits
            grad = torch.zeros_like(logits)
        selected = labels != IGNORE_INDEX
        outputs[f"{case}/grad_selected"] = grad.detach().double()[selected]
        outputs[f"{case}/grad_unselected"] = grad.detach().double()[~selected]

    # -- three steps of the stand-in model on the stand-in batch
    table = [float(x) for x in snapshot["step/lr_table"]]
    model = stand_in_model(snapshot)
    optimizer = RecordingAdam(model.parameters(), lr=float(snapshot["step/base_lr"]),
                              eps=float(snapshot["step/adam_eps"]))
    scheduler = stand_in_schedule(optimizer, table)
    masker, ids = stand_in_masker(snapshot), snapshot["step/ids"].long()
    clip_norm = float(snapshot["step/clip_norm"])
    results, used_lr, seen_grad_norm, left, position = [], [], [], [], []
    with warnings.catch_warnings():          # torch warns when the scheduler steps first: that is graded below
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        for step in range(1, NUM_STEPS + 1):
            calls = len(optimizer.used_lrs)
            result = call(run_train_step, model, ids.clone(), masker, torch.Generator().manual_seed(step),
                          optimizer, scheduler, clip_norm)
            if isinstance(result, Failed):
                return {**outputs, **_all_failed(result)}
            results.append(result)
            called = len(optimizer.used_lrs) > calls            # NaN when this step never called optimizer.step()
            used_lr.append(optimizer.used_lrs[-1] if called else float("nan"))
            seen_grad_norm.append(optimizer.seen_grad_norms[-1] if called else float("nan"))
            left.append(_left_in_grad(model))
            position.append(float(scheduler.last_epoch))
            if step == 1:
                outputs["step/parameters_after_1"] = _flat_parameters(model)
    outputs[f"step/parameters_after_{NUM_STEPS}"] = _flat_parameters(model)
    for field in ("loss", "grad_norm", "lr", "num_scored", "num_correct"):
        values = [_as_float64(getattr(r, field, Failed(f"train_step must return a StepResult with .{field}, got "
                                                        f"{type(r).__name__}"))) for r in results]
        failed = [v for v in values if isinstance(v, Failed)]
        outputs[f"step/result/{field}"] = failed[0] if failed else torch.stack(values)
    outputs["step/used_lr"] = torch.tensor(used_lr, dtype=torch.float64)
    outputs["step/seen_grad_norm"] = torch.tensor(seen_grad_norm, dtype=torch.float64)
    # Recorded in the snapshot but not graded: clearing the gradients at the start of a step is as
    # correct as at the end (a step that never clears them fails the parameters after 3 steps).
    outputs["step/left_in_grad"] = torch.tensor(left, dtype=torch.float64)
    outputs["step/schedule_position"] = torch.tensor(position, dtype=torch.float64)
    return outputs


STEP_KEYS = ("step/parameters_after_1", f"step/parameters_after_{NUM_STEPS}", "step/used_lr", "step/seen_grad_norm",
             "step/left_in_grad", "step/schedule_position", "step/result/loss", "step/result/grad_norm",
             "step/result/lr", "step/result/num_scored", "step/result/num_correct")


def _all_failed(failed: Failed) -> dict:
    return {key: failed for key in STEP_KEYS}


def overfit(snapshot: dict[str, torch.Tensor], run_train_step) -> tuple[float, float, bool]:
    """The masked loss before and after ``OVERFIT_STEPS`` steps on the one stand-in batch, with a
    constant learning rate and Adam's usual settings, and whether the parameters moved at all."""
    model = stand_in_model(snapshot)
    start = _flat_parameters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=OVERFIT_LR)
    scheduler = stand_in_schedule(optimizer, [1.0])
    masker, ids = stand_in_masker(snapshot), snapshot["step/ids"].long()
    batch = masker(ids, None)
    before = masked_loss(model, batch)
    with one_thread(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        for step in range(OVERFIT_STEPS):
            result = call(run_train_step, model, ids.clone(), masker, torch.Generator().manual_seed(step),
                          optimizer, scheduler, OVERFIT_CLIP)
            if isinstance(result, Failed):
                return before, result, not torch.equal(start, _flat_parameters(model))
    return before, masked_loss(model, batch), not torch.equal(start, _flat_parameters(model))


# (key, what the item says, tolerance); the snapshot's ``expected/<key>`` is the reference output.
def _items(snapshot: dict[str, torch.Tensor]) -> list[tuple[str, str, tuple[float, float, str]]]:
    logits, labels = snapshot["loss/logits"], snapshot["loss/labels"]
    selected = int((labels != IGNORE_INDEX).sum())
    shape = f"logits {list(logits.shape)}, {selected} of {labels.numel()} positions selected"
    clip = float(snapshot["step/clip_norm"])
    table = ", ".join(f"{float(x):g}" for x in snapshot["step/lr_table"][:NUM_STEPS])
    setting = f"stand-in model, fixed batch, Adam, clip_norm {clip:g}"
    return [
        ("loss/loss", f"masked_cross_entropy: the loss ({shape})", LOSS_TOL),
        ("loss/count", f"masked_cross_entropy: the count of selected positions ({shape})", COUNT_TOL),
        ("loss/grad_unselected", "masked_cross_entropy: dL/dlogits is exactly 0 at the unselected positions",
         ZERO_TOL),
        ("loss/grad_selected", "masked_cross_entropy: dL/dlogits at the selected positions", LOSS_TOL),
        ("nothing_selected/loss", "masked_cross_entropy: with no position selected the loss is 0 (not NaN)",
         LOSS_TOL),
        ("nothing_selected/count", "masked_cross_entropy: with no position selected the count is 0", COUNT_TOL),
        ("step/parameters_after_1", f"train_step: the parameters after 1 step ({setting})", PARAM_TOL),
        (f"step/parameters_after_{NUM_STEPS}", f"train_step: the parameters after {NUM_STEPS} steps ({setting})",
         PARAM_TOL),
        ("step/used_lr", f"train_step: the learning rate optimizer.step() uses at steps 1..{NUM_STEPS} "
                         f"(base lr x {table}: the scheduler steps once, after the optimizer)", LR_TOL),
        ("step/seen_grad_norm", f"train_step: the gradient norm optimizer.step() sees is clipped to {clip:g}",
         NORM_TOL),
        ("step/schedule_position", f"train_step: scheduler.step() is called once per step (steps 1..{NUM_STEPS})",
         COUNT_TOL),
        ("step/result/loss", f"train_step returns: the loss of each step", LOSS_TOL),
        ("step/result/grad_norm", f"train_step returns: the gradient norm before clipping", NORM_TOL),
        ("step/result/lr", f"train_step returns: the learning rate each step used", LR_TOL),
        ("step/result/num_scored", f"train_step returns: the number of selected positions", COUNT_TOL),
        ("step/result/num_correct", f"train_step returns: the number of selected positions predicted right",
         COUNT_TOL),
    ]


def _close(got, expected: torch.Tensor, tolerance) -> bool:
    atol, rtol, _ = tolerance
    return isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape) and torch.allclose(got.double(), expected.double(),
                                                                        rtol=rtol, atol=atol, equal_nan=True)


def check_step(run_masked_cross_entropy=None, run_train_step=None, seed: int | None = None) -> Report:
    """``run_masked_cross_entropy`` and ``run_train_step`` (default: ``adapters.run_masked_cross_entropy``
    and ``adapters.run_train_step``) reach your loss and step; pass your own functions with the same
    signatures to check an implementation that lives elsewhere (a notebook). ``seed`` draws the fresh
    logits of the property item (default: a fixed seed, so the report is the same on every run)."""
    run_masked_cross_entropy = run_masked_cross_entropy or adapters.run_masked_cross_entropy
    run_train_step = run_train_step or adapters.run_train_step
    report = Report(PART, TITLE, POINTS)
    with grading(report, PLANNED_ITEMS), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _check(report, run_masked_cross_entropy, run_train_step, seed)
    return report


def _check(report: Report, run_masked_cross_entropy, run_train_step, seed) -> None:
    snapshot = load_snapshot(PART)
    got = run_cases(snapshot, run_masked_cross_entropy, run_train_step)
    items = _items(snapshot)

    # Two bugs can give the same output on one item (the same gradient with different loss values), so
    # each failing item names a bug that reproduces every output, if one does; otherwise only a bug that
    # would not have failed an item that passed (two bugs at once: each item may still name one).
    def bug_output(bug: str, key: str) -> torch.Tensor:
        return snapshot.get(f"bug/{bug}/{key}", snapshot[f"expected/{key}"])

    passing = [(key, tolerance) for key, _, tolerance in items
               if _close(got[key], snapshot[f"expected/{key}"], tolerance)]
    suspects = [bug for bug in CAUSES
                if all(_close(got[key], bug_output(bug, key), tolerance) for key, _, tolerance in items)]
    if not suspects:
        suspects = [bug for bug in CAUSES if all(_close(bug_output(bug, key), snapshot[f"expected/{key}"],
                                                        tolerance) for key, tolerance in passing)]

    # Parameters that never moved explain every wrong number of the step, however they were kept still.
    start = _flat_parameters(stand_in_model(snapshot))
    after = got[f"step/parameters_after_{NUM_STEPS}"]
    frozen = isinstance(after, torch.Tensor) and after.shape == start.shape and torch.equal(after, start)
    for key, name, (atol, rtol, reason) in items:
        found = {bug: output for bug, output in bugs_of(snapshot, key, CAUSES).items() if bug in suspects}
        item = report.add(compare(name, got[key], snapshot[f"expected/{key}"], atol, rtol, reason, found))
        if not item.passed and item.cause not in CAUSES.values() and not isinstance(got[key], Failed):
            if frozen and key.startswith("step/"):
                item.cause = CAUSES["cannot_overfit_one_batch"]
            elif item.cause.startswith("no known bug"):
                where = "masked_cross_entropy" if key.startswith(("loss/", "nothing_selected/")) else "train_step"
                item.cause = f"not a catalogued bug: this value of {where} is wrong; " + HINTS[key]

    report.add(_fresh_loss_item(run_masked_cross_entropy, seed, report))

    before, after, moved = overfit(snapshot, run_train_step)
    name = (f"train_step overfits one fixed batch: the masked loss falls below {OVERFIT_THRESHOLD:g} in "
            f"{OVERFIT_STEPS} steps (Adam, lr {OVERFIT_LR:g}, clip_norm {OVERFIT_CLIP:g})")
    tolerance = (f"below {OVERFIT_THRESHOLD:g}: the reference goes from {before:.2g} to < 1e-6 "
                 f"(the loss is measured here, not taken from your step)")
    if isinstance(after, Failed):
        report.add(compare(name, after, torch.zeros(()), 0, 0, tolerance))
        return
    item = Item(name, after < OVERFIT_THRESHOLD, tolerance=tolerance)
    if not item.passed:
        item.detail = f"masked loss {before:.4g} before, {after:.4g} after {OVERFIT_STEPS} steps"
        named = [i.cause for i in report.items if not i.passed and i.cause in CAUSES.values()]
        item.cause = named[0] if named else NOT_LEARNING if moved else CAUSES["cannot_overfit_one_batch"]
    report.add(item)


def _fresh_loss_item(run_masked_cross_entropy, seed, report: Report) -> Item:
    """masked_cross_entropy on fresh random logits of another shape and vocabulary: the loss is the mean
    of -log softmax over the selected positions, the count is theirs, and the gradient is 0 elsewhere."""
    rng = generator(seed)
    batch, seq, vocab = 4, 9, int(torch.randint(12, 40, (1,), generator=rng))
    logits = (torch.randn(batch, seq, vocab, generator=rng, dtype=torch.float64) * 2).requires_grad_(True)
    labels = torch.randint(0, vocab, (batch, seq), generator=rng)
    selected = torch.rand(batch, seq, generator=rng) < 0.3
    selected[0, 0], selected[-1, -1] = True, False
    labels = labels.masked_fill(~selected, IGNORE_INDEX)
    name = (f"masked_cross_entropy on fresh logits [{batch}, {seq}, {vocab}] with {int(selected.sum())} positions "
            f"selected: the mean of -log softmax at the selected labels, their count, gradient 0 elsewhere")
    tolerance = f"atol {LOSS_TOL[0]:g}, rtol {LOSS_TOL[1]:g}: {LOSS_TOL[2]}"
    result = call(run_masked_cross_entropy, logits, labels.clone())
    if isinstance(result, Failed):
        return compare(name, result, torch.zeros(()), 0, 0, tolerance)
    problem = ""
    if not (isinstance(result, tuple) and len(result) == 2):
        problem = f"masked_cross_entropy must return (loss, count), got {type(result).__name__}"
    else:
        loss, count = result
        want = F.cross_entropy(logits.detach().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        got_loss, got_count = _as_float64(loss), _as_float64(count)
        if isinstance(got_loss, Failed) or isinstance(got_count, Failed):
            problem = str(got_loss if isinstance(got_loss, Failed) else got_count)
        elif not _close(got_loss, want, LOSS_TOL):
            problem = f"the loss: expected {float(want):.6g}, got {float(got_loss):.6g}"
        elif int(got_count) != int(selected.sum()):
            problem = f"the count: expected {int(selected.sum())}, got {float(got_count):g}"
        elif isinstance(loss, torch.Tensor) and loss.requires_grad:
            grad, = torch.autograd.grad(loss, logits)
            leaked = grad[~selected].abs().amax(-1) > 0
            if bool(leaked.any()):
                at = [int(i) for i in leaked.nonzero()[0]]
                problem = (f"dL/dlogits is not 0 at {int(leaked.sum())} unselected positions; first at {at}")
        else:
            problem = "the loss does not carry a gradient (cut from the graph: .item(), .detach(), torch.tensor(...))"
    if not problem:
        return Item(name, True, tolerance=tolerance)
    named = [i.cause for i in report.items if not i.passed and i.cause in CAUSES.values()]
    return Item(name, False, problem, named[0] if named else
                "not a catalogued bug: masked_cross_entropy gives a wrong value on these logits; " + HINTS["loss/loss"],
                tolerance)
