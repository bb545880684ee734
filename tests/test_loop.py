"""The training loop a student reads (``scratchmlm/loop.py``) is the loop that runs.

``train_loop`` is checked against the loop its docstring writes out, its callbacks against the
steps they must see, and the ``Trainer`` against ``train_loop`` itself: the same seed gives the
same weights, bit for bit, whatever the Trainer writes around the loop.
"""

import pytest
import torch

import scratchmlm as sm
from scratchmlm.harness.build import RunData, build_model, derive_seeds, make_optimizer
from scratchmlm.harness.config import ModelConfig, RunConfig, TrainConfig
from scratchmlm.harness.trainer import Trainer
from scratchmlm.harness.run_dir import read_metrics

TEXT = "the quick brown fox jumps over the lazy dog.\nTHE QUICK BROWN FOX!\n" * 40


def tiny_parts(seed: int = 0) -> dict:
    """A tiny model with dropout, its optimizer and schedule, and every generator, seeded alike."""
    tokenizer = sm.CharTokenizer.from_text(TEXT)
    ids = tokenizer.encode(TEXT, parse_special=False)
    masker = sm.BertMasker.for_tokenizer(tokenizer)
    torch.manual_seed(seed)                 # initialisation, then dropout, from the global generator
    model = sm.TransformerMLM(tokenizer.vocab_size, d_model=16, num_heads=2, num_layers=1, d_ff=32,
                              max_len=12, dropout=0.1)
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.9, 0.98), eps=1e-9)
    return dict(model=model, train_ids=ids, masker=masker, optimizer=optimizer,
                scheduler=sm.NoamScheduler(optimizer, 16, warmup=4),
                batch_rng=torch.Generator().manual_seed(seed + 1), mask_rng=torch.Generator().manual_seed(seed + 2),
                valid=sm.FrozenValidationSet.build(ids[-200:], masker, 12, num_windows=8))


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def run_loop(parts: dict, **settings) -> int:
    settings = {"steps": 10, "batch_size": 4, "seq_len": 12, "clip_norm": 0.5, **settings}
    return sm.train_loop(parts["model"], parts["train_ids"], parts["masker"], parts["optimizer"],
                         parts["scheduler"], batch_rng=parts["batch_rng"], mask_rng=parts["mask_rng"], **settings)


def test_the_loop_is_the_loop_its_docstring_writes_out():
    by_hand = tiny_parts()
    by_hand["model"].train()
    losses = []
    for _ in range(10):
        ids = sm.random_windows(by_hand["train_ids"], 4, 12, by_hand["batch_rng"])
        result = sm.train_step(by_hand["model"], ids, by_hand["masker"], by_hand["mask_rng"],
                               by_hand["optimizer"], by_hand["scheduler"], 0.5)
        losses.append(result.loss)

    looped = tiny_parts()
    looped["model"].eval()                 # the loop itself switches dropout on
    seen = []
    assert run_loop(looped, on_step=lambda step, result: seen.append(result.loss)) == 10
    assert same(weights(looped["model"]), weights(by_hand["model"]))
    assert torch.equal(torch.stack(seen), torch.stack(losses))
    assert looped["scheduler"].last_epoch == 10          # one schedule step per training step


def test_callbacks_see_every_step_and_every_evaluation_in_order():
    calls = []
    parts = tiny_parts()
    end = run_loop(parts, steps=11, valid=parts["valid"], eval_every=4,
                   on_step=lambda step, result: calls.append(("step", step)) and False,
                   on_eval=lambda step, scores: calls.append(("eval", step, scores.fingerprint)) and False)
    assert end == 11
    assert [c[1] for c in calls if c[0] == "step"] == list(range(1, 12))
    assert [c[1] for c in calls if c[0] == "eval"] == [4, 8, 11]          # every 4 steps, and the last
    assert calls.index(("eval", 4, parts["valid"].fingerprint)) == calls.index(("step", 4)) + 1
    assert parts["model"].training                       # evaluation switched dropout back on


def test_evaluation_scores_the_model_as_it_is_at_that_step():
    parts, scores = tiny_parts(), {}
    run_loop(parts, steps=6, valid=parts["valid"], eval_every=3,
             on_eval=lambda step, result: scores.update({step: result}))
    assert sorted(scores) == [3, 6]
    assert scores[6].overall.loss == sm.evaluate(parts["model"], parts["valid"]).overall.loss
    assert scores[3].overall.loss != scores[6].overall.loss


def test_a_callback_stops_the_loop():
    parts = tiny_parts()
    evals = []
    end = run_loop(parts, steps=50, valid=parts["valid"], eval_every=4,
                   on_step=lambda step, result: step == 8,      # stop after step 8 and its evaluation
                   on_eval=lambda step, scores: evals.append(step))
    assert end == 8 and evals == [4, 8]
    parts = tiny_parts()
    end = run_loop(parts, steps=50, valid=parts["valid"], eval_every=3,
                   on_eval=lambda step, scores: step >= 6)
    assert end == 6 and parts["scheduler"].last_epoch == 6


def test_a_run_continued_from_its_step_is_the_same_run():
    straight = tiny_parts()
    run_loop(straight, steps=10)
    halves = tiny_parts()
    assert run_loop(halves, steps=4) == 4
    steps_seen = []
    assert run_loop(halves, steps=10, step=4, on_step=lambda step, result: steps_seen.append(step)) == 10
    assert steps_seen == list(range(5, 11))
    assert same(weights(halves["model"]), weights(straight["model"]))


def test_a_zero_evaluation_interval_is_refused_in_one_line():
    parts = tiny_parts()
    with pytest.raises(sm.ScratchMLMError, match="eval_every must be at least 1"):
        run_loop(parts, valid=parts["valid"], eval_every=0)


def test_the_trainer_runs_the_same_loop(tmp_path, corpus_text):
    """The Trainer (run directory, metrics, checkpoints, samples, stop requests around the loop)
    ends with the very weights and validation scores of ``train_loop`` alone, from the same seed."""
    text = corpus_text[:20_000]
    config = RunConfig(ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=12, dropout=0.1),
                       TrainConfig(steps=23, batch_size=8, seq_len=12, warmup=5, noam_factor=2.0, clip_norm=0.3,
                                   log_every=3, eval_every=10, sample_every=7, valid_windows=16, seed=3))
    trainer = Trainer(config, tmp_path / "run", text=text, progress=False, plots=False)   # matplotlib is slow
    assert trainer.train()["step"] == 23

    train = config.train                 # the same pieces, built from the same configuration
    data = RunData.prepare(train, text)
    config.model.vocab_size = data.tokenizer.vocab_size
    seeds = derive_seeds(train.seed)
    model = build_model(config.model, seeds["init"])
    optimizer = make_optimizer(model.parameters(), train)
    scheduler = sm.NoamScheduler(optimizer, config.model.d_model, train.warmup, train.noam_factor)
    torch.manual_seed(seeds["dropout"])
    evaluations = {}
    sm.train_loop(model, data.train_ids, data.masker, optimizer, scheduler, steps=train.steps,
                  batch_size=train.batch_size, seq_len=train.seq_len, clip_norm=train.clip_norm,
                  batch_rng=torch.Generator().manual_seed(seeds["batches"]),
                  mask_rng=torch.Generator().manual_seed(seeds["masking"]),
                  valid=data.valid, eval_every=train.eval_every,
                  on_eval=lambda step, scores: evaluations.update({step: scores.to_dict()}))

    assert same(weights(trainer.model), weights(model))
    logged = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "eval"}
    assert sorted(logged) == sorted(evaluations) == [10, 20, 23]
    for step, scores in evaluations.items():
        assert (logged[step]["loss"], logged[step]["top1"]) == (scores["loss"], scores["top1"])
