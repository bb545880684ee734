import pytest
import torch

from scratchmlm import NoamScheduler, ScratchMLMError, noam_lr

pytestmark = pytest.mark.noam


def test_exact_values():
    assert noam_lr(2000, 128, 2000) == pytest.approx(1.976423537605237e-3, rel=1e-12)
    assert noam_lr(2000, 128, 2000) == pytest.approx(1 / (128 * 2000) ** 0.5, rel=1e-12)
    assert noam_lr(1, 128, 2000) == pytest.approx(128 ** -0.5 * 2000 ** -1.5, rel=1e-12)
    assert noam_lr(1000, 128, 2000) == pytest.approx(0.5 * noam_lr(2000, 128, 2000), rel=1e-12)
    assert noam_lr(8000, 128, 2000) == pytest.approx(0.5 * noam_lr(2000, 128, 2000), rel=1e-12)
    assert noam_lr(4000, 512, 4000, factor=2.0) == pytest.approx(2 * 512 ** -0.5 * 4000 ** -0.5)


def test_peak_at_warmup_and_step_zero():
    rates = [noam_lr(step, 128, 2000) for step in range(0, 6001)]
    assert rates[0] == 0.0
    assert max(rates) == rates[2000]
    assert all(a < b for a, b in zip(rates[1:2000], rates[2:2001]))
    assert all(a > b for a, b in zip(rates[2000:], rates[2001:]))


def test_invalid_arguments():
    with pytest.raises(ScratchMLMError):
        noam_lr(1, 128, 0)
    with pytest.raises(ScratchMLMError):
        noam_lr(-1, 128, 10)


@pytest.mark.parametrize("optimizer_class", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_scheduler_drives_any_optimizer(optimizer_class):
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = optimizer_class([parameter], lr=123.0)
    scheduler = NoamScheduler(optimizer, d_model=128, warmup=10)
    seen = []
    for _ in range(25):
        seen.append(optimizer.param_groups[0]["lr"])
        parameter.sum().backward()
        optimizer.step()
        scheduler.step()
    assert seen == [noam_lr(step, 128, 10) for step in range(1, 26)]


def test_scheduler_state_round_trip():
    """Stopping after k steps and resuming from saved state continues the schedule exactly as an
    uninterrupted run does (resuming loads the optimizer's and the scheduler's state, as the
    Trainer does)."""
    def run(parameter):
        optimizer = torch.optim.Adam([parameter], lr=123.0)
        return optimizer, NoamScheduler(optimizer, d_model=64, warmup=5)

    def step(optimizer, scheduler, parameter):
        """One training step; returns the learning rate it used."""
        rate = optimizer.param_groups[0]["lr"]
        parameter.grad = torch.ones_like(parameter)
        optimizer.step()
        scheduler.step()
        return rate

    k = 7
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer, scheduler = run(parameter)
    before = [step(optimizer, scheduler, parameter) for _ in range(k)]
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}

    resumed_parameter = torch.nn.Parameter(parameter.detach().clone())
    resumed_optimizer, resumed = run(resumed_parameter)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert resumed.optimizer_steps_done == k

    after = [step(optimizer, scheduler, parameter) for _ in range(6)]
    after_resuming = [step(resumed_optimizer, resumed, resumed_parameter) for _ in range(6)]
    assert before == [noam_lr(n, 64, 5) for n in range(1, k + 1)]
    assert after == after_resuming == [noam_lr(n, 64, 5) for n in range(k + 1, k + 7)]
    assert torch.equal(parameter, resumed_parameter)
