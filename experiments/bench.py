"""Training-speed benchmark for the seed configuration.

For scratchmlm's written-out ``TransformerMLM`` and, in the same run, an equally sized model built
from ``torch.nn.TransformerEncoderLayer`` (``torch_reference.py``), it times the real training step
(``scratchmlm.step.train_step``: masking, forward, loss, backward, clipping, Adam, Noam) as a run
pays for it -- windows cut from the real corpus, the real masker, the results read every 50 steps
like the Trainer's log -- and prints

* tokens/s and ms/step (median over interleaved rounds, so a noisy machine hurts both alike),
* model FLOPs utilisation: tokens/s x training FLOPs per token / the fp32 matmul peak measured in
  the same run at the model's own shape (2048 x 128 x 384, the qkv projection), with
  FLOPs per token = 3 [L (8 d^2 + 4 d d_ff + 4 T d) + 2 d V]  (5.07 MFLOP for the seed configuration),
* peak resident memory of each model's own process,
* on a CPU, one dropout (forward and backward) of a layer's attention weights against ``nn.Dropout``,

and the ratio of the two. Usage::

    python experiments/bench.py                 # CPU, seed configuration
    python experiments/bench.py --device cuda --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scratchmlm import Dropout, NoamScheduler, TransformerMLM, load_text  # noqa: E402
from scratchmlm.batches import random_windows  # noqa: E402
from scratchmlm.build import RunData, make_optimizer  # noqa: E402
from scratchmlm.config import TrainConfig  # noqa: E402
from scratchmlm.step import train_step  # noqa: E402

SEED = dict(d_model=128, num_heads=8, num_layers=6, d_ff=256, seq_len=32, batch_size=64, vocab_size=68)
LOG_EVERY = 50        # the Trainer's default: how often a run reads its step results


def training_flops_per_token(d_model, d_ff, num_layers, seq_len, vocab_size, **_) -> float:
    """3 x forward FLOPs per token (backward = 2 x forward), counting multiply-adds as 2 FLOPs."""
    per_layer = 8 * d_model ** 2 + 4 * d_model * d_ff + 4 * seq_len * d_model
    return 3 * (num_layers * per_layer + 2 * d_model * vocab_size)


def matmul_peak_gflops(device: torch.device, m: int = 2048, k: int = 2048, n: int = 2048,
                       repeats: int = 10) -> float:
    """fp32 GFLOP/s of an [m, k] @ [k, n] product: the ceiling the model's matmuls run against."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    repeats = max(repeats, int(2e10 // (2 * m * k * n)))     # at least ~20 GFLOP of work
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(kind: str, device: torch.device):
    config = dict(vocab_size=SEED["vocab_size"], d_model=SEED["d_model"], num_heads=SEED["num_heads"],
                  num_layers=SEED["num_layers"], d_ff=SEED["d_ff"], max_len=SEED["seq_len"], dropout=0.1)
    torch.manual_seed(0)
    if kind == "scratchmlm":
        return TransformerMLM(**config).to(device)
    from torch_reference import TorchEncoderMLM
    return TorchEncoderMLM(**config).to(device)


def measure(kind: str, device_name: str, steps: int, warmup_steps: int) -> dict:
    """Time ``steps`` training steps of one model in this process, as a run pays for them: windows
    cut from the real corpus, the real masker, and the step's results read every ``LOG_EVERY``
    steps (the Trainer's one synchronisation), after ``warmup_steps`` untimed steps."""
    device = torch.device(device_name)
    model = build(kind, device).train()
    data = RunData.prepare(TrainConfig(), load_text("tinyshakespeare"))
    train_ids = data.train_ids.to(device)
    masker = data.masker.to(device)
    optimizer = make_optimizer(model.parameters(), TrainConfig())       # the Trainer's optimizer
    scheduler = NoamScheduler(optimizer, SEED["d_model"], warmup=2000)
    windows = torch.Generator(device=device).manual_seed(1)
    masks = torch.Generator(device=device).manual_seed(2)

    def step():
        ids = random_windows(train_ids, SEED["batch_size"], SEED["seq_len"], windows)
        return train_step(model, ids, masker, masks, optimizer, scheduler, clip_norm=1.0)

    for _ in range(warmup_steps):
        step()
    synchronize(device)
    start = time.perf_counter()
    pending = []
    for number in range(1, steps + 1):
        pending.append(step())
        if number % LOG_EVERY == 0 or number == steps:
            float(torch.stack([r.loss for r in pending]).mean())    # what the Trainer's log reads
            pending = []
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = steps * SEED["batch_size"] * SEED["seq_len"]
    return {"kind": kind, "parameters": sum(p.numel() for p in model.parameters()),
            "tokens_per_second": tokens / seconds,
            "ms_per_step": 1000 * seconds / steps, "peak_rss_mib": peak_kib / 1024,
            "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--measure", choices=["scratchmlm", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:   # child process: one model, one round, JSON on stdout
        print(json.dumps(measure(args.measure, args.device, args.steps, args.warmup_steps)))
        return

    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; "
          f"batch {SEED['batch_size']} x seq {SEED['seq_len']}, d_model {SEED['d_model']}, "
          f"d_ff {SEED['d_ff']}, {SEED['num_heads']} heads, {SEED['num_layers']} layers")
    flops = training_flops_per_token(**SEED)
    square = matmul_peak_gflops(device)
    tokens = SEED["batch_size"] * SEED["seq_len"]
    peak = matmul_peak_gflops(device, tokens, SEED["d_model"], 3 * SEED["d_model"])   # the qkv projection
    print(f"training FLOPs per token: {flops / 1e6:.2f} MFLOP; measured fp32 matmul peak: {square:.0f} GFLOP/s "
          f"at 2048^3, {peak:.0f} GFLOP/s at the model's {tokens}x{SEED['d_model']}x{3 * SEED['d_model']} "
          f"(MFU is against the latter)")
    runs: dict[str, list[dict]] = {"scratchmlm": [], "torch": []}
    for _ in range(args.rounds):
        for kind in runs:   # interleaved, each in a fresh process (its own peak memory)
            output = subprocess.run(
                [sys.executable, __file__, "--measure", kind, "--device", args.device,
                 "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)],
                capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
            runs[kind].append(json.loads(output.stdout.strip().splitlines()[-1]))
    summary = {}
    names = {"scratchmlm": "scratchmlm TransformerMLM (written out)",
             "torch": "torch.nn.TransformerEncoderLayer model"}
    print(f"\n{'model':<42}{'params':>9}{'tokens/s':>10}{'ms/step':>9}{'MFU':>7}{'peak RSS':>10}")
    for kind, results in runs.items():
        tps = statistics.median(r["tokens_per_second"] for r in results)
        summary[kind] = tps
        rss = max(r["peak_rss_mib"] for r in results)
        print(f"{names[kind]:<42}{results[0]['parameters']:>9,}{tps:>10,.0f}"
              f"{1000 * SEED['batch_size'] * SEED['seq_len'] / tps:>9.1f}"
              f"{100 * tps * flops / (peak * 1e9):>6.1f}%{rss:>7.0f} MiB"
              + (f"  (GPU peak {results[0]['cuda_peak_mib']:.0f} MiB)" if results[0]["cuda_peak_mib"] else ""))
    spread = {k: (min(r["tokens_per_second"] for r in v), max(r["tokens_per_second"] for r in v))
              for k, v in runs.items()}
    print(f"\nspeed ratio scratchmlm / torch.nn: {summary['scratchmlm'] / summary['torch']:.2f}x "
          f"(median of {args.rounds} interleaved rounds of {args.steps} steps; range "
          + ", ".join(f"{k} {lo:,.0f}-{hi:,.0f}" for k, (lo, hi) in spread.items()) + " tokens/s)")
    if device.type == "cpu":
        ours, theirs = dropout_milliseconds(Dropout(0.1)), dropout_milliseconds(torch.nn.Dropout(0.1))
        print(f"dropout on one layer's attention weights [64, 8, 32, 32], forward + backward: scratchmlm "
              f"{ours:.2f} ms, torch.nn.Dropout {theirs:.2f} ms (median of 50)")


def dropout_milliseconds(dropout: torch.nn.Module, shape=(64, 8, 32, 32), repeats: int = 50) -> float:
    """Median milliseconds of one dropout forward and backward on a CPU tensor of ``shape``."""
    x = torch.randn(shape, requires_grad=True)
    gradient = torch.randn(shape)
    times = []
    for number in range(repeats + 5):
        start = time.perf_counter()
        dropout(x).backward(gradient)
        if number >= 5:                                    # the first calls warm the allocator
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


if __name__ == "__main__":
    main()
