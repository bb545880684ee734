"""Training-speed benchmark for the seed configuration.

For scratchmlm's written-out ``TransformerMLM`` and, in the same run, an equally sized model built
from ``torch.nn.TransformerEncoderLayer`` (``torch_reference.py``), it times the real training step
(``scratchmlm.step.train_step``: masking, forward, loss, backward, clipping, Adam, Noam) and prints

* tokens/s and ms/step (median over interleaved rounds, so a noisy machine hurts both alike),
* model FLOPs utilisation: tokens/s x training FLOPs per token / a measured fp32 matmul peak, with
  FLOPs per token = 3 [L (8 d^2 + 4 d d_ff + 4 T d) + 2 d V]  (5.07 MFLOP for the seed configuration),
* peak resident memory of each model's own process,

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

from scratchmlm import BertMasker, CharTokenizer, NoamScheduler, TransformerMLM  # noqa: E402
from scratchmlm.step import train_step  # noqa: E402

SEED = dict(d_model=128, num_heads=8, num_layers=6, d_ff=256, seq_len=32, batch_size=64, vocab_size=68)


def training_flops_per_token(d_model, d_ff, num_layers, seq_len, vocab_size, **_) -> float:
    """3 x forward FLOPs per token (backward = 2 x forward), counting multiply-adds as 2 FLOPs."""
    per_layer = 8 * d_model ** 2 + 4 * d_model * d_ff + 4 * seq_len * d_model
    return 3 * (num_layers * per_layer + 2 * d_model * vocab_size)


def matmul_peak_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


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
    """Time ``steps`` training steps of one model in this process."""
    device = torch.device(device_name)
    model = build(kind, device).train()
    tokenizer = CharTokenizer([chr(c) for c in range(32, 32 + SEED["vocab_size"] - 3)])
    masker = BertMasker.for_tokenizer(tokenizer)
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.9, 0.98), eps=1e-9)
    scheduler = NoamScheduler(optimizer, SEED["d_model"], warmup=2000)
    data = torch.Generator(device=device).manual_seed(1)
    masks = torch.Generator(device=device).manual_seed(2)
    shape = (SEED["batch_size"], SEED["seq_len"])

    def step():
        ids = torch.randint(3, SEED["vocab_size"], shape, generator=data, device=device)
        return train_step(model, ids, masker, masks, optimizer, scheduler, clip_norm=1.0)

    for _ in range(warmup_steps):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        result = step()
    float(result.loss)   # wait for the device
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": kind, "parameters": sum(p.numel() for p in model.parameters()),
            "tokens_per_second": steps * shape[0] * shape[1] / seconds,
            "ms_per_step": 1000 * seconds / steps, "peak_rss_mib": peak_kib / 1024,
            "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup-steps", type=int, default=5)
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
    peak = matmul_peak_gflops(device)
    print(f"training FLOPs per token: {flops / 1e6:.2f} MFLOP; measured fp32 matmul peak "
          f"(2048^3): {peak:.0f} GFLOP/s")
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


if __name__ == "__main__":
    main()
