"""The training loop: ``train_step`` again and again, with an evaluation now and then.

``train_loop`` is the whole of training, top to bottom:

    step_model.train()                                    dropout on
    while step < steps:
        ids    = random_windows(train_ids, batch_size, seq_len, batch_rng)       [batch, seq]
        result = train_step(step_model, ids, masker, mask_rng, optimizer, scheduler, clip_norm)
        step  += 1
        stop   = on_step(step, result)                    log it, ...; True: stop after this step
        every eval_every steps, and at the last one:
            scores = evaluate(model, valid)               on the frozen validation set
            if on_eval(step, scores): break               checkpoint, ...; True: stop now
        if stop: break
    return step

``step_model`` is ``model`` itself, unless the caller hands in ``model`` wrapped (to average the
gradients of several processes, to compute in bf16, compiled); ``evaluate`` always scores ``model``.

Everything else a run does -- print or log the losses, save checkpoints, stop early, answer
Ctrl-C -- is done by the two callbacks, which the caller writes. ``scratchmlm.Trainer`` runs this
very function: its callbacks write the run directory, and several processes run it side by side,
each on its own batches (the gradients are averaged inside ``backward``).

Three generators drive the randomness, always drawn in the same order: ``batch_rng`` picks the
windows, ``mask_rng`` the masks, and dropout draws from torch's global generator. Seed them alike
and two runs are the same run, bit for bit.
"""

from __future__ import annotations

from typing import Callable

import torch

from .batches import FrozenValidationSet, random_windows
from .errors import ScratchMLMError
from .evaluate import EvalResult, evaluate
from .masking import BertMasker
from .noam import NoamScheduler
from .step import StepResult, train_step


def train_loop(model: torch.nn.Module, train_ids: torch.Tensor, masker: BertMasker,
               optimizer: torch.optim.Optimizer, scheduler: NoamScheduler, *,
               steps: int, batch_size: int, seq_len: int,
               batch_rng: torch.Generator, mask_rng: torch.Generator, clip_norm: float = 1.0,
               valid: FrozenValidationSet | None = None, eval_every: int = 500, step: int = 0,
               on_step: Callable[[int, StepResult], bool] | None = None,
               on_eval: Callable[[int, EvalResult], bool] | None = None,
               step_model: torch.nn.Module | None = None) -> int:
    """Train ``model`` from step ``step`` up to step ``steps``; returns the step it stopped at.

    ``train_ids``: the 1-D training token ids. Each step trains on ``batch_size`` random windows of
    ``seq_len`` ids. Without ``valid`` (a ``FrozenValidationSet``) nothing is evaluated.

    ``on_step(step, result)`` is called after every step with its ``StepResult`` (tensors, still on
    the device: read them when you log, not every step, to keep a GPU busy), ``on_eval(step,
    scores)`` after every evaluation with its ``EvalResult``; either returns ``True`` to stop.
    ``step`` > 0 continues a run (the optimizer, scheduler and generators must be where it left off).

    ``step_model``: the module ``train_step`` calls, when that is ``model`` wrapped around the same
    parameters (averaging gradients across processes, bf16 autocast, ``torch.compile``);
    evaluation always scores ``model`` itself.
    """
    if valid is not None and eval_every < 1:
        raise ScratchMLMError(f"eval_every must be at least 1, got {eval_every}.")
    step_model = model if step_model is None else step_model
    step_model.train()                        # dropout on (evaluate() switches it off and back)
    while step < steps:
        ids = random_windows(train_ids, batch_size, seq_len, batch_rng)                  # [batch, seq]
        result = train_step(step_model, ids, masker, mask_rng, optimizer, scheduler, clip_norm)
        step += 1
        stop = on_step is not None and on_step(step, result)
        if valid is not None and (step % eval_every == 0 or step == steps):
            scores = evaluate(model, valid)
            if on_eval is not None and on_eval(step, scores):
                break
        if stop:
            break
    return step
