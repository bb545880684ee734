"""The CUDA path: skipped on machines without a GPU (CI has none); run on one with
``python -m pytest -q -m cuda``. Figures measured on a GPU are in experiments/README.md.

- the training step queues its work without ever waiting for the GPU (no host sync), eagerly,
  under bf16 autocast and compiled;
- a run on the GPU resumes bit for bit;
- dropout on the GPU keeps 1 - p of the elements;
- bf16 autocast and torch.compile compute what the fp32 model computes, within their precision;
- the model scores the frozen validation set on the GPU as on the CPU.
"""

import pytest
import torch

from scratchmlm import load_run
from scratchmlm.batches import random_windows
from scratchmlm.harness.build import RunData
from scratchmlm.harness.checkpoint import load_checkpoint
from scratchmlm.harness.config import ModelConfig, RunConfig, TrainConfig
from scratchmlm.evaluate import evaluate
from scratchmlm.model.dropout import Dropout
from scratchmlm.classroom.notebook import demo_run_dir
from scratchmlm.harness.precision import prepare_for_training
from scratchmlm.step import masked_cross_entropy, train_step
from scratchmlm.harness.trainer import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA GPU on this machine; the CUDA path is checked on a GPU machine")]


def small_config(**train) -> RunConfig:
    return RunConfig(ModelConfig(d_model=64, num_heads=4, num_layers=2, d_ff=128, max_len=32),
                     TrainConfig(device="cuda", seq_len=32, batch_size=32, warmup=20, log_every=5, eval_every=10,
                                 sample_every=1000, valid_windows=64, **train))


@pytest.mark.parametrize("precision, compile", [("fp32", False), ("bf16", False), ("bf16", True)])
def test_training_step_never_waits_for_the_gpu(tmp_path, corpus_text, precision, compile):
    trainer = Trainer(small_config(steps=10, precision=precision, compile=compile), tmp_path / "run",
                      text=corpus_text, progress=False)
    cfg = trainer.config.train

    def step():
        ids = random_windows(trainer.train_ids, cfg.batch_size, cfg.seq_len, trainer.batch_rng)
        return train_step(trainer.step_model, ids, trainer.masker, trainer.mask_rng, trainer.optimizer,
                          trainer.scheduler, cfg.clip_norm)

    trainer.step_model.train()
    for _ in range(3):                       # compilation and first-call set-up may synchronise
        step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call now raises
    try:
        results = [step() for _ in range(5)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    losses = torch.stack([r.loss for r in results]).cpu()
    assert torch.isfinite(losses).all() and results[0].loss.device.type == "cuda"


def test_gpu_run_resumes_bit_for_bit(tmp_path, corpus_text):
    straight = Trainer(small_config(steps=20), tmp_path / "straight", text=corpus_text, progress=False)
    straight.train()
    first = Trainer(small_config(steps=10), tmp_path / "resumed", text=corpus_text, progress=False)
    first.train()
    resumed = Trainer(small_config(steps=20), tmp_path / "resumed", resume=True, text=corpus_text, progress=False)
    resumed.train()
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["device_type"] == "cuda" and a["step"] == b["step"] == 20
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_dropout_on_the_gpu_keeps_one_minus_p():
    torch.manual_seed(0)
    x = torch.ones(1 << 22, device="cuda")
    kept = (Dropout(0.1).train()(x) != 0).double().mean().item()
    # 4.2M Bernoulli(0.9) draws: standard error 1.5e-4; 0.001 is 6.8 of them
    assert abs(kept - 0.9) < 1e-3
    assert torch.allclose(Dropout(0.1).train()(x).sum() / x.numel(), torch.tensor(1.0, device="cuda"), atol=3e-3)


@pytest.mark.parametrize("precision, compile, tolerance", [("bf16", False, 3e-2), ("fp32", True, 1e-4),
                                                            ("bf16", True, 3e-2)])
def test_fast_paths_compute_what_the_model_computes(precision, compile, tolerance):
    model, tokenizer, config, _ = load_run(demo_run_dir(), device="cuda")
    data = RunData.prepare(config.train, tokenizer=tokenizer)
    batch = data.valid.batch.to("cuda")
    inputs, labels = batch.inputs[:256], batch.labels[:256]
    model.train()
    for module in model.modules():            # dropout off: the same function either way
        if isinstance(module, Dropout):
            module.p = 0.0
    reference, _ = masked_cross_entropy(model(inputs), labels)
    fast, _ = masked_cross_entropy(prepare_for_training(model, torch.device("cuda"), precision, compile)(inputs),
                                   labels)
    assert abs(fast.item() - reference.item()) <= tolerance * reference.item(), (fast.item(), reference.item())


def test_gpu_scores_the_frozen_set_as_the_cpu_does():
    model, tokenizer, config, _ = load_run(demo_run_dir(), device="cpu")
    data = RunData.prepare(config.train, tokenizer=tokenizer)
    on_cpu = evaluate(model, data.valid)
    on_gpu = evaluate(model.to("cuda"), data.valid.to("cuda"))
    assert abs(on_gpu.overall.loss - on_cpu.overall.loss) < 1e-4
    assert abs(on_gpu.overall.top1 - on_cpu.overall.top1) <= 2 / on_cpu.overall.count
