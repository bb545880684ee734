"""Freeze the reference outputs, and each known bug's, that the graded checks compare against.

    python -m scratchmlm.classroom.checks.make_snapshots [PART ...]

Run by the teacher (and only after changing a check's inputs): the outputs come from the
reference implementation in this checkout, in float64 with dropout off.
"""

from __future__ import annotations

import sys

import torch

from . import adapters
from .mutants import MUTANTS, PROPERTY_ONLY
from .snapshots import save_snapshot


def with_reference_and_bugs(part: str, tensors: dict[str, torch.Tensor], outputs) -> dict[str, torch.Tensor]:
    """``tensors`` (the inputs) plus ``outputs("expected")`` from the reference and
    ``outputs("bug/<name>")`` with each of the part's known bugs swapped in."""
    tensors.update(outputs("expected"))
    for bug, patch in MUTANTS[part].items():
        if bug in PROPERTY_ONLY.get(part, ()):
            continue
        with patch():
            tensors.update(outputs(f"bug/{bug}"))
    return tensors


def attention_snapshot(seed: int | None = None) -> dict[str, torch.Tensor]:
    """``seed``: None for the frozen snapshot; an int draws fresh inputs (``scratchmlm grade``)."""
    rng = torch.Generator().manual_seed(2024 if seed is None else seed)
    # d_k = 9, sqrt(d_k) = 3, sqrt(d_model) = 6: each wrong scale gives a different output
    d_model, num_heads, batch, seq = 36, 4, 2, 5
    tensors = {"num_heads": torch.tensor(num_heads)}
    for name in ("q", "k", "v", "o"):
        tensors[f"weights/w_{name}"] = torch.randn(d_model, d_model, generator=rng, dtype=torch.float64) * 0.5
        tensors[f"weights/b_{name}"] = torch.randn(d_model, generator=rng, dtype=torch.float64) * 0.1
    tensors["plain/x"] = torch.randn(batch, seq, d_model, generator=rng, dtype=torch.float64)
    tensors["padding/x"] = torch.randn(batch, seq, d_model, generator=rng, dtype=torch.float64)
    padding = torch.zeros(batch, seq, dtype=torch.bool)
    padding[1, -2:] = True                                   # the second row ends in two padding keys
    tensors["padding/key_padding_mask"] = padding
    weights = {name.split("/", 1)[1]: t for name, t in tensors.items() if name.startswith("weights/")}

    def outputs(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}/plain/output": adapters.run_attention(weights, tensors["plain/x"], num_heads),
                f"{prefix}/padding/output": adapters.run_attention(weights, tensors["padding/x"], num_heads, padding)}

    return with_reference_and_bugs("attention", tensors, outputs)


# (encoder, step and noam snapshot functions go here; the masking check is statistical and has none)


def _encoder_layer_weights(rng: torch.Generator, d_model: int, d_ff: int) -> dict[str, torch.Tensor]:
    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=rng, dtype=torch.float64) * scale

    weights = {}
    for name in ("q", "k", "v", "o"):
        weights[f"w_{name}"] = randn(d_model, d_model, scale=d_model ** -0.5)
        weights[f"b_{name}"] = randn(d_model, scale=0.5 if name == "o" else 0.1)
    weights.update(w_1=randn(d_ff, d_model, scale=d_model ** -0.5), b_1=randn(d_ff, scale=0.1),
                   w_2=randn(d_model, d_ff, scale=d_ff ** -0.5), b_2=randn(d_model, scale=0.1))
    for norm in ("norm1", "norm2"):          # not 1 and 0, so that swapping the two norms shows
        weights[f"{norm}_weight"] = 1.0 + randn(d_model, scale=0.3)
        weights[f"{norm}_bias"] = randn(d_model, scale=0.2)
    return weights


def encoder_snapshot(seed: int | None = None) -> dict[str, torch.Tensor]:
    from .encoder import run_cases

    rng = torch.Generator().manual_seed(2025 if seed is None else seed)
    d_model, num_heads, d_ff, batch, seq, num_layers = 16, 4, 32, 2, 5, 2
    tensors = {"num_heads": torch.tensor(num_heads), "d_ff": torch.tensor(d_ff),
               "stack/num_layers": torch.tensor(num_layers)}

    def add(prefix, weights):
        tensors.update({f"weights/{prefix}/{name}": t for name, t in weights.items()})

    def randn(*shape):
        return torch.randn(*shape, generator=rng, dtype=torch.float64)

    # w_o = 0 isolates the layer from the student's attention (Part 2): any attention then outputs b_o.
    add("isolated", {**_encoder_layer_weights(rng, d_model, d_ff), "w_o": torch.zeros(d_model, d_model,
                                                                                       dtype=torch.float64)})
    add("one_position", _encoder_layer_weights(rng, d_model, d_ff))
    for i in range(num_layers):
        add(f"stack/layer{i}", {**_encoder_layer_weights(rng, d_model, d_ff),
                                "w_o": torch.zeros(d_model, d_model, dtype=torch.float64)})
    add("stack/final_norm", {"weight": 1.0 + 0.3 * randn(d_model), "bias": 0.2 * randn(d_model)})
    tensors["pre_norm/x"] = randn(batch, seq, d_model)
    tensors["post_norm/x"] = randn(batch, seq, d_model)
    padding = torch.zeros(batch, seq, dtype=torch.bool)
    padding[1, -2:] = True                   # invisible with w_o = 0; passed so the layer is called with one
    tensors["post_norm/key_padding_mask"] = padding
    tensors["pre_norm_one_position/x"] = randn(4, 1, d_model)
    tensors["post_norm_one_position/x"] = randn(4, 1, d_model)
    tensors["stack/x"] = randn(batch, seq - 1, d_model)

    def outputs(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}/{key}": t
                for key, t in run_cases(tensors, adapters.run_encoder_layer, adapters.run_encoder).items()}

    return with_reference_and_bugs("encoder", tensors, outputs)


def noam_snapshot(seed: int | None = None) -> dict[str, torch.Tensor]:
    from .noam import run_cases

    tensors = {}
    tables = [  # (d_model, warmup, factor, steps): rise and decay; the real peak; warmup 1 (decay only)
        (128, 10, 1.0, list(range(1, 41))),
        (512, 4000, 2.0, [1, 2, 3, 10, 100, 1000, 3999, 4000, 4001, 8000, 40000]),
        (36, 1, 0.5, list(range(1, 11))),
    ]
    scheduler = (64, 3, 1.5)
    if seed is not None:                     # the same shapes of table, drawn afresh
        rng = torch.Generator().manual_seed(seed)

        def draw(low: int, high: int) -> int:
            return int(torch.randint(low, high + 1, (), generator=rng))

        def factor() -> float:
            return round(0.25 + 2.0 * float(torch.rand((), generator=rng)), 3)

        warmup = draw(2000, 8000)
        tables = [(draw(16, 256), draw(5, 30), factor(), list(range(1, 41))),
                  (draw(128, 1024), warmup, factor(), sorted({1, 2, 3, draw(4, 50), draw(51, 500), warmup - 1,
                                                              warmup, warmup + 1, 2 * warmup, 10 * warmup})),
                  (draw(16, 256), 1, factor(), list(range(1, 11)))]
        scheduler = (draw(16, 256), draw(2, 6), factor())
    for i, (d_model, warmup, factor, steps) in enumerate(tables):
        tensors.update({f"table{i}/d_model": torch.tensor(d_model), f"table{i}/warmup": torch.tensor(warmup),
                        f"table{i}/factor": torch.tensor(factor, dtype=torch.float64),
                        f"table{i}/steps": torch.tensor(steps)})
    tensors.update({"scheduler/d_model": torch.tensor(scheduler[0]), "scheduler/warmup": torch.tensor(scheduler[1]),
                    "scheduler/factor": torch.tensor(scheduler[2], dtype=torch.float64),
                    "scheduler/steps": torch.tensor(8)})

    def outputs(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}/{key}": t
                for key, t in run_cases(tensors, adapters.run_noam, adapters.make_noam_scheduler).items()}

    return with_reference_and_bugs("noam", tensors, outputs)


def step_snapshot(seed: int | None = None) -> dict[str, torch.Tensor]:
    from ...masking import IGNORE_INDEX, MASKED, NOT_SELECTED, RANDOMISED, UNCHANGED
    from .step import StandInModel, run_cases

    rng = torch.Generator().manual_seed(2026 if seed is None else seed)
    vocab, mask_id, seq, batch, d = 11, 10, 6, 3, 4

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=rng, dtype=torch.float64) * scale

    tensors = {}
    # the loss: fixed logits, about 40% of the positions selected; every label 0 to vocab - 1 at least once
    logits = randn(2, 7, vocab, scale=2.0)
    labels = torch.randint(0, vocab, (2, 7), generator=rng)
    selected = torch.rand(2, 7, generator=rng) < 0.4
    selected[0, 0] = selected[1, -1] = True
    selected[0, 1] = False
    tensors.update({"loss/logits": logits, "loss/labels": labels.masked_fill(~selected, IGNORE_INDEX),
                    "nothing_selected/logits": randn(1, 4, vocab),
                    "nothing_selected/labels": torch.full((1, 4), IGNORE_INDEX)})

    # the step: a stand-in model (torch primitives), a fixed masked batch, Adam, LambdaLR over a table
    model = StandInModel(vocab, seq, d)
    tensors.update({"step/weights/embed": randn(vocab, d),
                    "step/weights/mix_weight": randn(seq * vocab, seq * d, scale=(seq * d) ** -0.5),
                    "step/weights/mix_bias": randn(seq * vocab, scale=0.1)})
    assert {name: p.shape for name, p in model.named_parameters()} == {
        "embed.weight": tensors["step/weights/embed"].shape, "mix.weight": tensors["step/weights/mix_weight"].shape,
        "mix.bias": tensors["step/weights/mix_bias"].shape}
    ids = torch.randint(0, mask_id, (batch, seq), generator=rng)
    kinds = torch.full((batch, seq), NOT_SELECTED)
    kinds[0, [1, 4]] = MASKED
    kinds[1, [0, 2]] = MASKED
    kinds[1, 5] = RANDOMISED
    kinds[2, [3]] = MASKED
    kinds[2, 0] = UNCHANGED
    inputs = ids.masked_fill(kinds == MASKED, mask_id)
    inputs[1, 5] = (ids[1, 5] + 3) % mask_id                  # a different real token
    tensors.update({"step/ids": ids, "step/masked/inputs": inputs, "step/masked/kinds": kinds,
                    "step/masked/labels": ids.masked_fill(kinds == NOT_SELECTED, IGNORE_INDEX),
                    # eps near the gradients' size: Adam's update then depends on their scale, so
                    # clipping shows (with eps 1e-8 Adam is nearly scale-free)
                    "step/base_lr": torch.tensor(0.05, dtype=torch.float64),
                    "step/adam_eps": torch.tensor(1e-2, dtype=torch.float64),
                    "step/clip_norm": torch.tensor(0.05, dtype=torch.float64),
                    # distinct rates: steps 1..3 use 1, 0.5, 0.8; one step ahead 0.5, 0.8, 0.3; twice 1, 0.8, 0.6
                    "step/lr_table": torch.tensor([1.0, 0.5, 0.8, 0.3, 0.6, 0.2, 0.9], dtype=torch.float64)})
    if seed is not None:                     # fresh distinct rates, so that no frozen rate can be looked up
        tensors["step/lr_table"] = (0.2 + 0.8 * torch.rand(7, generator=rng, dtype=torch.float64)).round(decimals=3)

    def outputs(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}/{key}": t for key, t in run_cases(tensors, adapters.run_masked_cross_entropy,
                                                             adapters.run_train_step).items()}

    return with_reference_and_bugs("step", tensors, outputs)


SNAPSHOTS = {"attention": attention_snapshot, "encoder": encoder_snapshot, "noam": noam_snapshot,
             "step": step_snapshot}


def check_distinguishable(part: str, tensors: dict[str, torch.Tensor]) -> None:
    """Every bug must change some output, and no two bugs may give the same outputs everywhere,
    or a check could not name the bug it sees."""
    keys = sorted(name.split("/", 1)[1] for name in tensors if name.startswith("expected/"))

    def outputs(prefix):
        return [tensors[f"{prefix}/{key}"] for key in keys]

    def same(a, b):
        return all(x.shape == y.shape and torch.allclose(x.double(), y.double(), rtol=1e-7, atol=1e-9)
                   for x, y in zip(a, b))

    bugs = sorted(set(MUTANTS[part]) - PROPERTY_ONLY.get(part, set()))
    for i, bug in enumerate(bugs):
        if same(outputs(f"bug/{bug}"), outputs("expected")):
            raise AssertionError(f"{part}: the bug {bug!r} does not change any output of the check's inputs")
        for other in bugs[i + 1:]:
            if same(outputs(f"bug/{bug}"), outputs(f"bug/{other}")):
                raise AssertionError(f"{part}: the bugs {bug!r} and {other!r} give the same outputs")


def main(parts: list[str]) -> None:
    for part in parts or list(SNAPSHOTS):
        tensors = SNAPSHOTS[part]()
        check_distinguishable(part, tensors)
        print(f"wrote {save_snapshot(part, tensors)}")


if __name__ == "__main__":
    main(sys.argv[1:])
