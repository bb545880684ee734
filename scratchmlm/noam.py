"""The Noam learning-rate schedule (Vaswani et al. 2017, "Attention Is All You Need", eq. 3).

    lr(step) = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)

It rises linearly for ``warmup`` steps, peaks at ``step == warmup`` with
``factor * (d_model * warmup)^-0.5`` (1.976e-3 for d_model 128, warmup 2000, factor 1), then decays
as ``step^-0.5``. Steps count from 1 (the first optimizer step); ``lr(0)`` is defined as 0.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

from .errors import ScratchMLMError


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The Noam learning rate for optimizer step ``step`` (1-based; step 0 gives 0.0)."""
    if warmup < 1 or d_model < 1:
        raise ScratchMLMError(f"Noam needs warmup >= 1 and d_model >= 1, got warmup={warmup}, d_model={d_model}.")
    if step < 0:
        raise ScratchMLMError(f"step must be >= 0, got {step}.")
    # BEGIN SOLUTION noam
    # HINT: the formula is in the module docstring; remember lr(0) = 0 (0 ** -0.5 would divide by zero)
    if step == 0:
        return 0.0
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
    # END SOLUTION


class NoamScheduler(LRScheduler):
    """Sets every parameter group's learning rate to ``noam_lr(step)`` — works with any optimizer.

    The optimizer's own ``lr`` is ignored. Right after construction the learning rate is
    ``noam_lr(1)``, the rate of the first optimizer step; each ``scheduler.step()`` after an
    ``optimizer.step()`` moves to the next step's rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, d_model: int, warmup: int = 2000,
                 factor: float = 1.0, last_epoch: int = -1):
        noam_lr(1, d_model, warmup, factor)  # validates the arguments
        self.d_model, self.warmup, self.factor = d_model, warmup, factor
        super().__init__(optimizer, last_epoch)

    @property
    def optimizer_steps_done(self) -> int:
        return self.last_epoch

    def get_lr(self) -> list[float]:
        # BEGIN SOLUTION noam
        # HINT: self.last_epoch counts the optimizer steps done (0 right after construction);
        # HINT: the rate set now is the one the *next* optimizer step uses, one list entry per param group
        rate = noam_lr(self.last_epoch + 1, self.d_model, self.warmup, self.factor)
        return [rate for _ in self.optimizer.param_groups]
        # END SOLUTION
