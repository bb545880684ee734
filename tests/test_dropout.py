import math

import pytest
import torch

from scratchmlm import Dropout


def test_keep_rate_scale_and_gradient():
    torch.manual_seed(0)
    dropout = Dropout(0.1).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    n, keep = x.numel(), 1 - round(0.1 * 32768) / 32768
    assert abs(int(kept.sum()) - n * keep) < 5 * math.sqrt(n * keep * (1 - keep))
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / keep))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / keep)
    # all four 16-bit quarters of every 64-bit random word are used, each kept at the same rate
    quarters = kept.view(-1, 4)
    for quarter in quarters.unbind(1):
        assert abs(int(quarter.sum()) - quarter.numel() * keep) < 5 * math.sqrt(quarter.numel() * keep * (1 - keep))
    # and independently: neighbours (which share a word) are dropped together at rate p^2
    both_dropped = int((~quarters[:, 0] & ~quarters[:, 1]).sum())
    m, p2 = quarters.shape[0], (1 - keep) ** 2
    assert abs(both_dropped - m * p2) < 5 * math.sqrt(m * p2 * (1 - p2))


def test_expectation_is_preserved_and_eval_is_identity():
    torch.manual_seed(1)
    x = torch.randn(2000, 500)
    dropout = Dropout(0.3)
    assert abs(dropout(x).mean().item() - x.mean().item()) < 0.01
    dropout.eval()
    assert dropout(x) is x


def test_reproducible_from_the_global_seed():
    dropout = Dropout(0.5)
    torch.manual_seed(3)
    a = dropout(torch.ones(64, 64))
    torch.manual_seed(3)
    b = dropout(torch.ones(64, 64))
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout(torch.ones(64, 64)))


def test_odd_sizes_and_zero_probability():
    torch.manual_seed(0)
    assert Dropout(0.2)(torch.ones(3, 5, 7)).shape == (3, 5, 7)
    x = torch.randn(4, 4)
    assert torch.equal(Dropout(0.0)(x), x)


def test_the_representable_boundaries():
    # the CPU path keeps an element when a 15-bit uniform u >= round(p * 32768)
    assert Dropout(0).threshold == Dropout(0.0).threshold == 0
    assert Dropout(math.nextafter(2 ** -16, 1)).threshold == 1          # just above 1/65536
    assert Dropout(2 ** -15).threshold == 1
    assert Dropout(math.nextafter(1 - 2 ** -16, 0)).threshold == 32767   # just below 1 - 1/65536
    torch.manual_seed(0)
    rarely = Dropout(math.nextafter(2 ** -16, 1))(torch.ones(2 ** 20))     # drops 1/32768: ~32 of them
    assert 0 < int((rarely == 0).sum()) < 100
    almost_all = Dropout(math.nextafter(1 - 2 ** -16, 0))(torch.ones(2 ** 20))
    assert 0 < int((almost_all != 0).sum()) < 100 and set(almost_all.unique().tolist()) == {0.0, 32768.0}


@pytest.mark.parametrize("p, rounds_to", [(1e-9, 0), (1e-6, 0), (2 ** -16, 0),
                                          (1 - 2 ** -16, 1), (0.99999, 1), (math.nextafter(1, 0), 1)])
def test_probabilities_the_cpu_path_cannot_represent_are_refused(p, rounds_to):
    with pytest.raises(ValueError, match=f"would round to {rounds_to} .*1/65536 < p < 1 - 1/65536"):
        Dropout(p)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, math.nan, math.inf, "0.1", None, True])
def test_non_probabilities_are_refused(p):
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\)"):
        Dropout(p)
