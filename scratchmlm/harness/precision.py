"""Mixed precision and compilation: the same model, computed faster.

**bf16 autocast.** Inside ``torch.autocast(device_type, dtype=torch.bfloat16)`` the matrix products
(``linear``, ``matmul``) run in bfloat16 -- 8 bits of mantissa instead of 23, the same exponent range
as float32, so no loss scaling is needed -- while reductions such as softmax, LayerNorm and the
loss stay in float32. The weights, their gradients and Adam's moments stay float32 ("master
weights"): only the forward pass's arithmetic changes, and ``masked_cross_entropy`` scores the
bfloat16 logits in float32.

``AutocastModel`` wraps a model so that its forward pass runs under autocast; ``train_step`` does
not change (it calls the wrapper like the model, and its ``backward`` replays the recorded
precision of each operation).

**torch.compile** traces the model's forward (and, through AOTAutograd, its backward) into graphs
and fuses element-wise work into generated kernels. The first steps pay the compilation; every
later step runs the compiled code. ``prepare_for_training`` applies what a run's settings ask for.
"""

from __future__ import annotations

import torch
from torch import nn


class AutocastModel(nn.Module):
    """``model``, with its forward pass under bfloat16 autocast on ``device_type``."""

    def __init__(self, model: nn.Module, device_type: str):
        super().__init__()
        self.model = model
        self.device_type = device_type

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            return self.model(ids)


def prepare_for_training(model: nn.Module, device: torch.device, precision: str = "fp32",
                         compile: bool = False) -> nn.Module:
    """The module ``train_step`` should call: ``model``, under bf16 autocast and/or compiled.

    Its parameters are ``model``'s own, so the optimizer, checkpoints and evaluation keep using
    ``model`` itself.
    """
    if precision == "bf16":
        model = AutocastModel(model, device.type)
    elif precision != "fp32":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    if compile:
        model = torch.compile(model)
    return model
