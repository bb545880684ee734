"""The demo model shipped in scratchmlm/demo: it loads, and it scores what its metrics say."""

import json

import pytest
import torch

import scratchmlm as sm
from scratchmlm.harness.build import RunData
from scratchmlm.harness.checkpoint import load_checkpoint
from scratchmlm.classroom.notebook import demo_run_dir
from scratchmlm.harness.run_dir import read_metrics


@pytest.fixture(scope="module")
def demo():
    model, tokenizer, config, state = sm.load_run(demo_run_dir(), device="cpu")
    return model, tokenizer, config, state


def best_eval(records):
    return min((r for r in records if r["type"] == "eval"), key=lambda r: r["loss"])


def test_the_demo_is_small_and_holds_weights_only():
    path = demo_run_dir() / "checkpoints" / "best.pt"
    assert path.stat().st_size < 4_000_000, "the demo checkpoint should stay a few MB"
    state = load_checkpoint(path)
    assert "optimizer" not in state and "rng" not in state
    assert json.loads((demo_run_dir() / "config.json").read_text())["train"]["data"] == "tinyshakespeare"


def test_the_demo_scores_what_its_metrics_say(demo):
    model, tokenizer, config, state = demo
    records = read_metrics(demo_run_dir() / "metrics.jsonl")
    best = best_eval(records)
    assert best["step"] == state["step"], "best.pt is not the checkpoint of the lowest validation loss"

    data = RunData.prepare(config.train, tokenizer=tokenizer)
    assert data.valid.fingerprint == state["valid_fingerprint"] == best["fingerprint"]
    result = sm.evaluate(model, data.valid)
    # Summation order (threads, batch size) moves the mean CE by ~1e-6; an argmax can flip
    # only on a near-tie, so top-1 may move by a position or two out of ~4,900.
    assert result.overall.loss == pytest.approx(best["loss"], abs=1e-4)
    assert result.overall.top1 == pytest.approx(best["top1"], abs=5e-4)
    assert result.by_kind["mask"].top1 == pytest.approx(best["by_kind"]["mask"]["top1"], abs=5e-4)

    baselines = {r["name"]: r for r in records if r["type"] == "baseline"}
    bigram_mask = baselines["bigram"]["by_kind"]["mask"]["top1"]
    assert result.by_kind["mask"].top1 > bigram_mask + 0.1, "the demo model should clearly use context"


def test_the_demo_fills_a_famous_line(demo):
    model, tokenizer, _, _ = demo
    predictions = sm.fill_mask(model, tokenizer, "A plague o' both your h[MASK]uses!")
    assert predictions[0].candidates[0].token == "o"
    assert torch.isfinite(torch.tensor([c.score for c in predictions[0].candidates])).all()
