"""The run's optimizer: the fused kernel computes the same update as the written-out loop."""

import pytest
import torch

from scratchmlm import TransformerMLM
from scratchmlm.harness.build import make_optimizer
from scratchmlm.harness.config import TrainConfig


def _train(optimizer_for, steps: int = 5) -> list[torch.Tensor]:
    """The model's parameters after ``steps`` updates from the same fixed gradients (not gradients
    of a loss, which would let rounding differences grow through training)."""
    torch.manual_seed(0)
    model = TransformerMLM(vocab_size=11, d_model=16, num_heads=2, num_layers=2, d_ff=32, max_len=8)
    optimizer = optimizer_for(model.parameters())
    rng = torch.Generator().manual_seed(1)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 * (step + 1)            # as the Noam schedule changes it every step
        for parameter in model.parameters():
            parameter.grad = torch.randn(parameter.shape, generator=rng)
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name, reference", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_fused_optimizer_equals_the_loop(name, reference):
    config = TrainConfig(optimizer=name, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.95, adam_eps=1e-7)
    fused = make_optimizer(TransformerMLM(vocab_size=11, d_model=16, num_heads=2, num_layers=2, d_ff=32,
                                          max_len=8).parameters(), config)
    assert fused.defaults["fused"], "on the CPU the run should use the fused kernel"

    def loop(parameters):
        return reference(parameters, lr=0.0, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.1, foreach=False)

    got = _train(lambda parameters: make_optimizer(parameters, config))
    want = _train(loop)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adam_and_adamw_apply_weight_decay_differently():
    adam = _train(lambda p: make_optimizer(p, TrainConfig(optimizer="adam", weight_decay=0.1)))
    adamw = _train(lambda p: make_optimizer(p, TrainConfig(optimizer="adamw", weight_decay=0.1)))
    assert max((a - b).abs().max().item() for a, b in zip(adam, adamw)) > 1e-4
