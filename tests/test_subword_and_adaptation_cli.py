"""Subword vocabularies, the new maskers and domain adaptation, through the real command line (in-process)."""

import json

import pytest
import torch

from scratchmlm.harness.build import RunData
from scratchmlm.evaluate import evaluate
from scratchmlm.harness.run_dir import load_run, read_metrics
from test_cli import TINY_MODEL

# A text that is not Shakespeare, with digits (which Tiny Shakespeare's alphabet lacks but for '3').
LOGBOOK = "".join(
    f"{day} May. Wind {wind}, {sky}. Sounded {depth} fathoms off the {place}; the {bird} kept to the {shore}.\n"
    for day, wind, sky, depth, place, bird, shore in zip(
        [d % 28 + 1 for d in range(400)], ["north-west", "light", "fresh from the south", "calm"] * 100,
        ["clear", "overcast", "rain at noon", "fog"] * 100, [7, 12, 19, 24, 40] * 80,
        ["point", "reef", "headland", "sandbar", "river mouth"] * 80,
        ["gannet", "petrel", "tern", "cormorant"] * 100, ["rocks", "shallows", "cliffs", "beach", "weed"] * 80))


@pytest.mark.slow
def test_a_wordpiece_run_with_span_masking_works_end_to_end(run_cli, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--run-dir", run, "--steps", 40, "--warmup", 20, "--eval-every", 20,
                     "--tokenizer", "wordpiece", "--vocab-size", 400, "--masking", "span",
                     "--batch-size", 16, "--valid-windows", 256, "--color", "never", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    assert "fills correct" in result.stdout
    hf = json.loads((run / "tokenizer.json").read_text())
    assert hf["model"]["type"] == "WordPiece" and len(hf["model"]["vocab"]) == 400
    records = read_metrics(run / "metrics.jsonl")
    evals = [r for r in records if r["type"] == "eval"]
    bigram = next(r for r in records if r["type"] == "baseline" and r["name"] == "bigram")
    assert [r["step"] for r in evals] == [20, 40] and bigram["top1"] > 0.1
    # resume continues with the run's own tokenizer
    assert run_cli("train", "--run-dir", run, "--resume", "--steps", 50).returncode == 0
    filled = run_cli("fill-mask", run, "To be, or not to [MASK]", "--json")
    assert filled.returncode == 0, filled.stderr
    candidates = json.loads(filled.stdout)[0]
    assert len(candidates) == 5 and all(c["sequence"].startswith("To be, or not to") for c in candidates)
    assert all(c["sequence"] == "To be, or not to" + c["token_str"] for c in candidates)
    evaluated = run_cli("evaluate", run, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["model"]["top1"] is not None
    sampled = run_cli("sample", run, "--count", 2, "--color", "never")
    assert sampled.returncode == 0 and "fills correct" in sampled.stdout


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, run_cli):
    run = tmp_path_factory.mktemp("adapt") / "shakespeare"
    result = run_cli("train", "--run-dir", run, "--steps", 60, "--warmup", 30, "--eval-every", 30,
                     "--seq-len", 24, "--quiet", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    return run


@pytest.mark.slow
def test_init_from_continues_a_run_on_new_text_and_reports_before_and_after(run_cli, source_run, tmp_path):
    data = tmp_path / "logbook.txt"
    data.write_text(LOGBOOK)
    run = tmp_path / "adapted"
    result = run_cli("train", "--init-from", source_run, "--data", data, "--run-dir", run, "--steps", 60,
                     "--warmup", 20, "--eval-every", 30, "--seq-len", 24, "--color", "never")
    assert result.returncode == 0, result.stderr
    # the vocabulary is kept; the digits it lacks are reported, with their counts
    assert (run / "tokenizer.json").read_text() == (source_run / "tokenizer.json").read_text()
    unknown = {digit: LOGBOOK.count(digit) for digit in "012456789"}
    assert "9 character(s) of the new text are not in the vocabulary" in result.stderr
    assert all(f"'{digit}' x{count}" in result.stderr for digit, count in unknown.items())
    records = read_metrics(run / "metrics.jsonl")
    assert next(r for r in records if r["type"] == "init")["unknown_characters"] == unknown
    # the model is the source's, and evaluation at step 0 scores exactly its weights on the new text
    assert json.loads((run / "config.json").read_text())["model"] == \
        json.loads((source_run / "config.json").read_text())["model"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [0, 30, 60]
    model, tokenizer, config, _ = load_run(source_run, "best", "cpu")
    adapted_config = load_run(run, "last", "cpu")[2]
    before = evaluate(model, RunData.prepare(adapted_config.train, tokenizer=tokenizer).valid)
    assert before.overall.loss == pytest.approx(evals[0]["loss"], rel=1e-6)
    # continued pre-training on the new text lowers its perplexity and pseudo-perplexity
    assert evals[-1]["perplexity"] < 0.9 * evals[0]["perplexity"]
    assert evals[-1]["pseudo_perplexity"] < evals[0]["pseudo_perplexity"]
    assert "before (step 0): perplexity" in result.stdout and " after (step 60): perplexity" in result.stdout
    # the source run is untouched, and the adapted run can be resumed and evaluated
    assert torch.equal(load_run(source_run, "best", "cpu")[0].generator.projection.weight,
                       model.generator.projection.weight)
    assert run_cli("train", "--run-dir", run, "--resume", "--steps", 70, "--quiet").returncode == 0
    assert run_cli("evaluate", run).returncode == 0


def test_init_from_refuses_what_cannot_work(run_cli, source_run, tmp_path):
    result = run_cli("train", "--init-from", tmp_path / "nothing", "--run-dir", tmp_path / "a", "--steps", 5)
    assert result.returncode == 2 and "no config.json" in result.stderr
    result = run_cli("train", "--init-from", source_run, "--run-dir", tmp_path / "b", "--steps", 5,
                     "--seq-len", 64)
    assert result.returncode == 2 and "--seq-len 64 is longer than the 32 tokens" in result.stderr
