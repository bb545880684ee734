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

from ..masking import IGNORE_INDEX, MaskedBatch
from . import adapters
from .report import Item, Report, compare
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
GRADIENTS_LEFT = ("gradients were left in p.grad after the step: clear them at the end of the step "
                  "(optimizer.zero_grad(), step 8 of the docstring), so no other code sees stale gradients")
NOT_LEARNING = ("the step does not learn one fixed batch: check that loss.backward(), clipping and "
                "optimizer.step() act on the model's parameters in this order")

NUM_STEPS = 3


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


def _as_float64(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().double().cpu().reshape(())
    return torch.tensor(float(value), dtype=torch.float64)       # not as_tensor: a Python float would become float32


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
        loss, count = run_masked_cross_entropy(logits, labels.clone())
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
            results.append(run_train_step(model, ids.clone(), masker, torch.Generator().manual_seed(step),
                                          optimizer, scheduler, clip_norm))
            called = len(optimizer.used_lrs) > calls            # NaN when this step never called optimizer.step()
            used_lr.append(optimizer.used_lrs[-1] if called else float("nan"))
            seen_grad_norm.append(optimizer.seen_grad_norms[-1] if called else float("nan"))
            left.append(_left_in_grad(model))
            position.append(float(scheduler.last_epoch))
            if step == 1:
                outputs["step/parameters_after_1"] = _flat_parameters(model)
    outputs[f"step/parameters_after_{NUM_STEPS}"] = _flat_parameters(model)
    for field in ("loss", "grad_norm", "lr", "num_scored", "num_correct"):
        outputs[f"step/result/{field}"] = torch.stack([_as_float64(getattr(r, field)) for r in results])
    outputs["step/used_lr"] = torch.tensor(used_lr, dtype=torch.float64)
    outputs["step/seen_grad_norm"] = torch.tensor(seen_grad_norm, dtype=torch.float64)
    outputs["step/left_in_grad"] = torch.tensor(left, dtype=torch.float64)
    outputs["step/schedule_position"] = torch.tensor(position, dtype=torch.float64)
    return outputs


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
            run_train_step(model, ids.clone(), masker, torch.Generator().manual_seed(step), optimizer,
                           scheduler, OVERFIT_CLIP)
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
        ("step/left_in_grad", f"train_step: the gradients are cleared after each step (p.grad None or 0)", ZERO_TOL),
        ("step/result/loss", f"train_step returns: the loss of each step", LOSS_TOL),
        ("step/result/grad_norm", f"train_step returns: the gradient norm before clipping", NORM_TOL),
        ("step/result/lr", f"train_step returns: the learning rate each step used", LR_TOL),
        ("step/result/num_scored", f"train_step returns: the number of selected positions", COUNT_TOL),
        ("step/result/num_correct", f"train_step returns: the number of selected positions predicted right",
         COUNT_TOL),
    ]


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance) -> bool:
    atol, rtol, _ = tolerance
    return tuple(got.shape) == tuple(expected.shape) and torch.allclose(got.double(), expected.double(),
                                                                        rtol=rtol, atol=atol, equal_nan=True)


def check_step(run_masked_cross_entropy=None, run_train_step=None) -> Report:
    """``run_masked_cross_entropy`` and ``run_train_step`` (default: ``adapters.run_masked_cross_entropy``
    and ``adapters.run_train_step``) reach your loss and step; pass your own functions with the same
    signatures to check an implementation that lives elsewhere (a notebook)."""
    run_masked_cross_entropy = run_masked_cross_entropy or adapters.run_masked_cross_entropy
    run_train_step = run_train_step or adapters.run_train_step
    report = Report(PART, TITLE, POINTS)
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
    frozen = torch.equal(got[f"step/parameters_after_{NUM_STEPS}"], start)
    for key, name, (atol, rtol, reason) in items:
        found = {bug: output for bug, output in bugs_of(snapshot, key, CAUSES).items() if bug in suspects}
        item = report.add(compare(name, got[key], snapshot[f"expected/{key}"], atol, rtol, reason, found))
        if not item.passed and item.cause not in CAUSES.values():
            if frozen and key.startswith("step/"):
                item.cause = CAUSES["cannot_overfit_one_batch"]
            elif key == "step/left_in_grad":
                item.cause = GRADIENTS_LEFT

    before, after, moved = overfit(snapshot, run_train_step)
    item = Item(f"train_step overfits one fixed batch: the masked loss falls below {OVERFIT_THRESHOLD:g} in "
                f"{OVERFIT_STEPS} steps (Adam, lr {OVERFIT_LR:g}, clip_norm {OVERFIT_CLIP:g})",
                after < OVERFIT_THRESHOLD,
                tolerance=f"below {OVERFIT_THRESHOLD:g}: the reference goes from {before:.2g} to < 1e-6 "
                          f"(the loss is measured here, not taken from your step)")
    if not item.passed:
        item.detail = f"masked loss {before:.4g} before, {after:.4g} after {OVERFIT_STEPS} steps"
        named = [i.cause for i in report.items if not i.passed and i.cause in CAUSES.values()]
        item.cause = named[0] if named else NOT_LEARNING if moved else CAUSES["cannot_overfit_one_batch"]
    report.add(item)
    return report
