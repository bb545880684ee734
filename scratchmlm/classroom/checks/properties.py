"""Properties on fresh random inputs: what must hold for *any* weights and inputs, not only the frozen
snapshot's. Each check draws its inputs from ``torch.Generator().manual_seed(seed)``; the default seed
is fixed, so a student sees the same report on every run, and a teacher's grader may pass fresh seeds.

    eval mode:    a module built with dropout p > 0, in eval mode, gives exactly its dropout-0 output
    padding:      outputs at real positions do not change when the inputs at padding positions change
    gradients:    autograd's gradient of every parameter agrees with a finite difference (central, float64)
"""

from __future__ import annotations

import inspect

import torch

from .guard import RAISED, YOUR_LINE, Failed, call
from .report import Item, describe_mismatch

DEFAULT_SEED = 0
# float64 in any summation order agrees to ~1e-14; a property broken by a bug moves values by > 1e-3.
ATOL, RTOL = 1e-9, 1e-7
TOLERANCE = "atol 1e-9, rtol 1e-7: float64 in any summation order agrees to ~1e-14; the bugs move values by > 1e-3"
# A central difference in float64 with step 1e-5 is exact to ~1e-9 on these smooth functions.
FD_STEP, FD_RTOL, FD_ATOL = 1e-5, 1e-5, 1e-7
FD_TOLERANCE = (f"|autograd - finite difference| <= {FD_ATOL:g} + {FD_RTOL:g} |finite difference|: a central "
                f"difference with step {FD_STEP:g} in float64 is exact to ~1e-9 here; a missing gradient "
                f"is off by 100%")


def generator(seed: int | None) -> torch.Generator:
    return torch.Generator().manual_seed(DEFAULT_SEED if seed is None else int(seed))


def randn(rng: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=rng, dtype=torch.float64) * scale


def attention_weights(rng: torch.Generator, d_model: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    weights = {}
    for name in ("q", "k", "v", "o"):
        weights[f"w_{name}"] = randn(rng, d_model, d_model, scale=scale)
        weights[f"b_{name}"] = randn(rng, d_model, scale=0.1)
    return weights


def layer_weights(rng: torch.Generator, d_model: int, d_ff: int) -> dict[str, torch.Tensor]:
    """A live encoder layer's weights (``w_o`` not 0), named as ``adapters.run_encoder_layer`` takes them."""
    weights = attention_weights(rng, d_model, scale=d_model ** -0.5 * 1.5)
    weights.update(w_1=randn(rng, d_ff, d_model, scale=d_model ** -0.5), b_1=randn(rng, d_ff, scale=0.1),
                   w_2=randn(rng, d_model, d_ff, scale=d_ff ** -0.5), b_2=randn(rng, d_model, scale=0.1))
    for norm in ("norm1", "norm2"):
        weights[f"{norm}_weight"] = 1.0 + randn(rng, d_model, scale=0.3)
        weights[f"{norm}_bias"] = randn(rng, d_model, scale=0.2)
    return weights


def padding_mask(batch: int, seq: int, rng: torch.Generator) -> torch.Tensor:
    """``[batch, seq]`` True at padding: row 0 has none, every other row ends in 1 to seq - 2 padding."""
    lengths = torch.randint(1, seq - 1, (batch,), generator=rng)
    lengths[0] = 0
    return torch.arange(seq) >= seq - lengths[:, None]


def clones(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in weights.items()}


def not_a_tensor(value, shape) -> str:
    """Why ``value`` is not a float tensor of ``shape`` (empty when it is)."""
    if isinstance(value, Failed):
        return value.reason + (f"\n{YOUR_LINE}{value.where}" if value.where else "")
    if not isinstance(value, torch.Tensor):
        return f"expected a tensor, got {type(value).__name__}"
    if list(value.shape) != list(shape):
        return f"shape: expected {list(shape)}, got {list(value.shape)}"
    return ""


def same(got, expected: torch.Tensor, at: torch.Tensor | None = None) -> str:
    """Empty when ``got`` equals ``expected`` (float64 tolerance), at the positions ``at`` if given;
    otherwise where and by how much they differ."""
    problem = not_a_tensor(got, expected.shape)
    if problem:
        return problem
    got, expected = got.detach().double(), expected.detach().double()
    if at is not None:                 # compare only there; elsewhere got := expected, so indices stay [b, s, d]
        at = at.reshape(at.shape + (1,) * (got.dim() - at.dim()))
        got = torch.where(at, got, expected)
    if torch.allclose(got, expected, rtol=RTOL, atol=ATOL):
        return ""
    return describe_mismatch(got, expected, ATOL, RTOL)


def gradient_problems(module: torch.nn.Module, forward, rng: torch.Generator) -> list[str]:
    """Compare, for every parameter of ``module``, autograd's directional derivative of a random linear
    function of ``forward()`` with a central finite difference along a random direction. A parameter
    whose gradient autograd misses (``.detach()``, ``torch.no_grad()``, a copy made with ``.data``)
    shows as a mismatch; one the output does not depend on at all passes (both are 0)."""
    module.train()
    parameters = [(name, p) for name, p in module.named_parameters()]
    if not parameters:
        return ["the module has no parameters (module.parameters() is empty): the weights must be "
                "nn.Parameters (e.g. inside nn.Linear), or an optimizer would never train them"]
    with torch.no_grad():
        output = forward()
    if isinstance(output, tuple):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        return [f"the module returned {type(output).__name__}, not a tensor"]
    probe = torch.randn(output.shape, generator=rng, dtype=torch.float64)
    module.zero_grad(set_to_none=True)
    output = forward()
    output = output[0] if isinstance(output, tuple) else output
    if output.requires_grad:
        (output.double() * probe).sum().backward()
    problems = []
    for name, p in parameters:
        direction = torch.randn(p.shape, generator=rng, dtype=torch.float64).to(p.dtype)
        autograd = 0.0 if p.grad is None else float((p.grad.double() * direction.double()).sum())
        with torch.no_grad():
            original = p.detach().clone()
            p.add_(direction, alpha=FD_STEP)
            plus = float((forward_value(forward) * probe).sum())
            p.copy_(original - FD_STEP * direction)
            minus = float((forward_value(forward) * probe).sum())
            p.copy_(original)
        numeric = (plus - minus) / (2 * FD_STEP)
        if abs(autograd - numeric) > FD_ATOL + FD_RTOL * abs(numeric):
            missing = " (p.grad is None)" if p.grad is None else ""
            problems.append(f"parameter {name} {list(p.shape)}: autograd gives {autograd:.6g}{missing}, a finite "
                            f"difference {numeric:.6g}")
    module.eval()
    return problems


def accepts(function, argument: str) -> bool:
    """Whether ``function`` takes ``argument`` by name (or ``**kwargs``): a function written in a notebook
    with the plain signature promises no dropout and no attention weights, and is not asked for them."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == argument or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class FunctionModule(torch.nn.Module):
    """A function of ``(weights, x, *settings, key_padding_mask=...)`` as a module whose parameters are
    the weights, so that the gradient property can be checked on a notebook's function too."""

    def __init__(self, function, weights: dict[str, torch.Tensor], *settings):
        super().__init__()
        self.function, self.settings = function, settings
        self.weights = torch.nn.ParameterDict({name: torch.nn.Parameter(t.clone()) for name, t in weights.items()})

    def forward(self, x, key_padding_mask=None):
        return self.function(dict(self.weights), x, *self.settings, key_padding_mask=key_padding_mask)


NOT_PROMISED = "not checked: your function's signature has no {argument} argument, so it promises none"


class NoModule:
    """What the teacher's grade (``checks/grade.py``) passes as ``make_attention`` /
    ``make_encoder_layer``: a module cannot cross the process boundary to the teacher's side, so the
    gradient item is not graded there (weight 0); ``scratchmlm check`` grades it on the student's side."""


NO_MODULE = NoModule()
NOT_IN_GRADE = ("not checked by the teacher's grade: the gradient property needs your module in this process "
                "(scratchmlm check grades it)")


def forward_value(forward) -> torch.Tensor:
    output = forward()
    return (output[0] if isinstance(output, tuple) else output).detach().double()


def item_from(name: str, problem: str, cause: str, tolerance: str = TOLERANCE, weight: float = 1.0) -> Item:
    if problem and YOUR_LINE in problem:
        cause = RAISED
    return Item(name, not problem, problem, cause if problem else "", tolerance, weight)


__all__ = ["DEFAULT_SEED", "FunctionModule", "accepts", "call", "generator", "gradient_problems", "item_from", "same"]
