"""The hand-written training step, and the masked loss it minimises.

``train_step`` is one optimisation step, top to bottom:

    1. mask the batch (no gradient)        inputs, labels = masker(ids, rng)
    2. forward                             logits = model(inputs)                   [batch, seq, vocab]
    3. loss on the selected positions      L = sum_selected -log p(label) / #selected
    4. backward                            dL/dθ
    5. clip the global gradient norm       g <- g * min(1, clip / ||g||)
    6. optimizer step                      θ <- Adam(θ, g, lr)
    7. scheduler step                      lr <- Noam(step + 1)
    8. zero the gradients

Only the selected positions enter the loss, so dL/dlogits is exactly zero everywhere else: the
model is never asked to predict a character it can see unmasked and unselected.

The step returns tensors (loss, gradient norm, counts), not Python numbers, so that on a GPU
nothing waits for the device; whoever runs the loop reads them when it logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .masking import IGNORE_INDEX, BertMasker
from .noam import NoamScheduler


@dataclass
class StepResult:
    """What one step reports; tensors stay on the training device until someone reads them."""

    loss: torch.Tensor          # mean cross-entropy over the selected positions
    grad_norm: torch.Tensor     # global gradient norm before clipping
    lr: float                   # the learning rate this step used
    num_scored: torch.Tensor    # number of selected positions
    num_correct: torch.Tensor   # selected positions whose top-1 prediction was right


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the positions whose label is not ``-100``, and their count.

    ``logits`` ``[batch, seq, vocab]``, ``labels`` ``[batch, seq]``:

        L = sum_{i : labels_i != -100} -log softmax(logits_i)[labels_i]  /  max(#selected, 1)

    Dividing by ``max(count, 1)`` keeps a batch with nothing selected at loss 0 instead of NaN.
    Half-precision logits (bf16 autocast) are scored in float32; float32 and float64 as they are.
    """
    # BEGIN SOLUTION step
    # HINT: F.cross_entropy wants [N, vocab] and [N]: flatten batch and seq; it takes ignore_index
    # HINT: and reduction="sum", so you can divide by the count yourself (clamped, for an empty selection)
    scored = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    total = F.cross_entropy(scored.flatten(0, 1), labels.flatten(),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum()
    return total / count.clamp(min=1), count
    # END SOLUTION


def train_step(model: torch.nn.Module, ids: torch.Tensor, masker: BertMasker, rng: torch.Generator,
               optimizer: torch.optim.Optimizer, scheduler: NoamScheduler, clip_norm: float) -> StepResult:
    """One hand-written training step on a batch of token ids ``[batch, seq]``.

    ``rng`` drives the masking; the model must be in training mode (dropout on).
    """
    # BEGIN SOLUTION step
    # HINT: follow the eight numbered lines of this module's docstring, in that order
    # HINT: torch.nn.utils.clip_grad_norm_ clips in place and returns the norm from before clipping
    # HINT: read the lr this step uses from optimizer.param_groups before the scheduler moves it on
    # 1. mask: choose the positions to predict and corrupt the input there
    with torch.no_grad():
        masked = masker(ids, rng)
    # 2. forward
    logits = model(masked.inputs)                                      # [batch, seq, vocab]
    # 3. the loss sees only the selected positions
    loss, num_scored = masked_cross_entropy(logits, masked.labels)
    # 4. backward
    loss.backward()
    # 5. clip: rescale all gradients together so their global L2 norm is at most clip_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    # 6. optimizer step, with the learning rate the scheduler set for this step
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    # 7. advance the schedule to the next step's learning rate
    scheduler.step()
    # 8. clear the gradients for the next step
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        num_correct = ((logits.argmax(-1) == masked.labels) & (masked.labels != IGNORE_INDEX)).sum()
    return StepResult(loss.detach(), grad_norm.detach(), lr, num_scored, num_correct)
    # END SOLUTION
