"""Part 2's graded check: the reference passes, each known bug is named, its frozen snapshot is
current, a correct implementation in another layout passes, and a stub or a wrong shape is
reported, not raised."""

import pytest
import torch
import torch.nn.functional as F

from scratchmlm.classroom.checks import check_attention
from scratchmlm.classroom.checks.attention import CAUSES
from scratchmlm.classroom.checks.make_snapshots import attention_snapshot, check_distinguishable
from scratchmlm.classroom.checks.mutants import MUTANTS
from scratchmlm.classroom.checks.snapshots import load_snapshot

pytestmark = pytest.mark.attention


def test_the_reference_passes():
    report = check_attention()
    assert report.passed, report.to_text()
    assert report.score == report.points == 25
    assert all(item.tolerance for item in report.items)


@pytest.mark.parametrize("bug", sorted(MUTANTS["attention"]))
def test_each_bug_is_named(bug):
    with MUTANTS["attention"][bug]():
        report = check_attention()
    failing = [item for item in report.items if not item.passed]
    assert failing, f"{bug} passed:\n{report.to_text()}"
    assert {item.cause for item in failing} == {CAUSES[bug]}, report.to_text()


def test_the_snapshot_is_current():
    fresh, disk = attention_snapshot(), load_snapshot("attention")
    assert set(fresh) == set(disk), "rerun python -m scratchmlm.classroom.checks.make_snapshots attention"
    for name in fresh:
        assert torch.equal(fresh[name], disk[name]), f"{name} is stale: rerun make_snapshots attention"
    check_distinguishable("attention", fresh)


def sdpa_attention(weights, x, num_heads, key_padding_mask=None, dropout=0.0, return_weights=False):
    """Separate W_q, W_k, W_v and torch's fused kernel: a different layout and a different code path
    (eval mode: dropout unused; the weights, when asked, written out)."""
    batch, seq, d_model = x.shape

    def heads(name):
        return F.linear(x, weights[f"w_{name}"], weights[f"b_{name}"]).unflatten(-1, (num_heads, -1)).transpose(1, 2)

    mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(heads("q"), heads("k"), heads("v"), attn_mask=mask)
    output = F.linear(out.transpose(1, 2).reshape(batch, seq, d_model), weights["w_o"], weights["b_o"])
    if not return_weights:
        return output
    scores = heads("q") @ heads("k").transpose(-2, -1) / (d_model // num_heads) ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return output, scores.softmax(-1)


class SeparateProjections(torch.nn.Module):
    """A student's layout: W_q, W_k, W_v, W_o as four nn.Linear layers; the module the check builds."""

    def __init__(self, weights, num_heads):
        super().__init__()
        d_model = weights["w_q"].shape[1]
        self.num_heads, self.weights = num_heads, None
        self.w = torch.nn.ModuleDict({name: torch.nn.Linear(d_model, d_model).double() for name in "qkvo"})
        with torch.no_grad():
            for name, linear in self.w.items():
                linear.weight.copy_(weights[f"w_{name}"])
                linear.bias.copy_(weights[f"b_{name}"])

    def forward(self, x, key_padding_mask=None, return_weights=False):
        batch, seq, d_model = x.shape
        split = {name: self.w[name](x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for name in "qkv"}
        scores = split["q"] @ split["k"].transpose(-2, -1) / (d_model // self.num_heads) ** 0.5
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(-1)
        output = self.w["o"]((weights @ split["v"]).transpose(1, 2).reshape(batch, seq, d_model))
        return (output, weights) if return_weights else output


def test_an_independent_implementation_passes():
    report = check_attention(run_attention=sdpa_attention,
                             make_attention=lambda weights, num_heads, dropout=0.0: SeparateProjections(weights,
                                                                                                        num_heads))
    assert report.passed, report.to_text()


def test_a_stub_is_reported_as_not_implemented():
    def stub(weights, x, num_heads, key_padding_mask=None):
        raise NotImplementedError("Part 2 (attention): implement me")

    report = check_attention(run_attention=stub)
    assert not report.passed and report.not_implemented == "Part 2 (attention): implement me"


def test_a_wrong_shape_is_reported_with_both_shapes():
    report = check_attention(run_attention=lambda weights, x, num_heads, key_padding_mask=None: x[:, :, :4])
    failing = [item for item in report.items if not item.passed]
    assert failing and "shape: expected [2, 5, 36], got [2, 5, 4]" in failing[0].detail
