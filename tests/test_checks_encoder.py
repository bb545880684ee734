"""Part 3's graded check: the reference passes, each known bug is named, the student's attention
(Part 2) cannot fail it, and its frozen snapshot is current."""

import math

import pytest
import torch
import torch.nn.functional as F

import scratchmlm.classroom.checks
from scratchmlm.classroom.checks.encoder import ATTENTION_FIRST, ATTENTION_HINT, CAUSES, PLANNED_ITEMS, check_encoder
from scratchmlm.classroom.checks.make_snapshots import check_distinguishable, encoder_snapshot
from scratchmlm.classroom.checks.mutants import MUTANTS, replaced
from scratchmlm.classroom.checks.snapshots import load_snapshot
from scratchmlm.model import EncoderLayer

pytestmark = pytest.mark.encoder


def test_the_reference_passes():
    report = check_encoder()
    assert report.passed, report.to_text()
    assert report.score == report.points == 20
    assert len(report.items) == PLANNED_ITEMS == 12
    assert all(item.tolerance for item in report.items)


@pytest.mark.parametrize("bug", sorted(MUTANTS["encoder"]))
def test_each_bug_is_named(bug):
    with MUTANTS["encoder"][bug]():
        report = check_encoder()
    failing = [item for item in report.items if not item.passed]
    assert failing, f"{bug} passed:\n{report.to_text()}"
    assert {item.cause for item in failing} == {CAUSES[bug]}, report.to_text()


@pytest.mark.parametrize("bug", sorted(MUTANTS["attention"]))
def test_a_bug_in_the_attention_fails_only_the_live_attention_items_and_says_so(bug):
    """The frozen cases isolate the layer from the attention (w_o = 0); the property items run a live
    attention, and when one fails because the attention fails the same property alone, it says so."""
    with MUTANTS["attention"][bug]():
        report = check_encoder()
    failing = [item for item in report.items if not item.passed]
    assert all(item.cause == ATTENTION_FIRST and "live attention" in item.name for item in failing), report.to_text()


def test_the_snapshot_is_current():
    fresh, disk = encoder_snapshot(), load_snapshot("encoder")
    assert set(fresh) == set(disk), "rerun python -m scratchmlm.classroom.checks.make_snapshots encoder"
    for name, tensor in fresh.items():
        assert tensor.dtype == disk[name].dtype and tensor.shape == disk[name].shape, name
        assert torch.allclose(tensor.double(), disk[name].double(), rtol=0, atol=1e-12), name
    check_distinguishable("encoder", fresh)


def test_the_dropout_case_expects_the_dropout_free_output():
    snapshot = load_snapshot("encoder")
    assert torch.equal(snapshot["expected/dropout/output"], snapshot["expected/pre_norm/output"])
    assert torch.equal(snapshot["expected/dropout/second_output"], snapshot["expected/pre_norm/output"])
    assert not snapshot["weights/isolated/w_o"].any() and not snapshot["weights/stack/layer0/w_o"].any()


def _written_out_layer(weights, x, num_heads, d_ff, norm_first, dropout=0.0, key_padding_mask=None):
    """An independent encoder layer from the formulas, in torch.nn.functional only."""
    batch, seq, d_model = x.shape
    d_k = d_model // num_heads

    def attention(h):
        def heads(name):
            projected = F.linear(h, weights[f"w_{name}"], weights[f"b_{name}"])
            return projected.view(batch, seq, num_heads, d_k).transpose(1, 2)
        scores = heads("q") @ heads("k").transpose(-2, -1) / math.sqrt(d_k)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        merged = (scores.softmax(-1) @ heads("v")).transpose(1, 2).reshape(batch, seq, d_model)
        return F.linear(merged, weights["w_o"], weights["b_o"])

    def norm(h, name):
        return F.layer_norm(h, (d_model,), weights[f"{name}_weight"], weights[f"{name}_bias"])

    def feed_forward(h):
        return F.linear(F.gelu(F.linear(h, weights["w_1"], weights["b_1"])), weights["w_2"], weights["b_2"])

    if norm_first:
        x = x + attention(norm(x, "norm1"))
        return x + feed_forward(norm(x, "norm2"))
    x = norm(x + attention(x), "norm1")
    return norm(x + feed_forward(x), "norm2")


def _written_out_encoder(layer_weights, final_norm, x, num_heads, d_ff, norm_first, key_padding_mask=None):
    for weights in layer_weights:
        x = _written_out_layer(weights, x, num_heads, d_ff, norm_first, key_padding_mask=key_padding_mask)
    if final_norm is not None:
        x = F.layer_norm(x, (x.shape[-1],), final_norm["weight"], final_norm["bias"])
    return x


def test_an_independent_implementation_in_another_layout_passes():
    """Functions, as a notebook writes them: the gradients are checked through the function itself,
    and the stack, whose signature has no dropout, is not asked about dropout (that item is worth 0)."""
    report = check_encoder(run_encoder_layer=_written_out_layer, run_encoder=_written_out_encoder)
    assert report.passed and report.score == report.points, report.to_text()
    unpromised = [item for item in report.items if item.name.startswith("not checked")]
    assert len(unpromised) == 1 and unpromised[0].weight == 0


def test_a_functional_layer_that_cuts_the_gradient_fails_the_gradient_item():
    def detached(weights, x, num_heads, d_ff, norm_first, dropout=0.0, key_padding_mask=None):
        frozen = {name: t.detach() if name.startswith("w_1") else t for name, t in weights.items()}
        return _written_out_layer(frozen, x, num_heads, d_ff, norm_first, dropout, key_padding_mask)

    report = check_encoder(run_encoder_layer=detached, run_encoder=_written_out_encoder)
    failing = [item for item in report.items if not item.passed]
    assert [item.name.split()[0] for item in failing] == ["every"] and "w_1" in failing[0].detail, report.to_text()


def test_a_pre_norm_attention_that_reads_x_fails_only_the_one_position_case_with_a_hint():
    reference = EncoderLayer.forward

    def forward(self, x, key_padding_mask=None, return_weights=False):
        if not self.norm_first:
            return reference(self, x, key_padding_mask, return_weights)
        x = x + self.dropout1(self.attention(x, key_padding_mask))          # forgot norm1 before attention
        return x + self.dropout2(self.feed_forward(self.norm2(x)))

    with replaced(EncoderLayer, "forward", forward):
        report = check_encoder()
    failing = [item for item in report.items if not item.passed]
    assert [item.name for item in failing] == [report.items[2].name], report.to_text()
    assert failing[0].cause.endswith(ATTENTION_HINT)


def test_the_check_leaves_the_global_random_stream_alone():
    state = torch.get_rng_state()
    check_encoder()
    assert torch.equal(torch.get_rng_state(), state)


def test_a_stub_gives_a_not_implemented_report():
    def stub(self, x, key_padding_mask=None, return_weights=False):
        raise NotImplementedError("Part 3 (encoder): implement EncoderLayer.forward")

    with replaced(EncoderLayer, "forward", stub):
        report = scratchmlm.classroom.checks.check_encoder()
    assert report.not_implemented == "Part 3 (encoder): implement EncoderLayer.forward"
    assert not report.passed and report.score == 0
    assert "not implemented yet" in report.to_text()
