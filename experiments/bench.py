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

and the ratio of the two.

``--compile`` measures ``torch.compile`` instead: for dropout 0.1 (the seed configuration) and 0
(``--preset fast``), eager against compiled, each in a fresh process with an empty compilation
cache (so the compilation is paid in full, as on first use). It reports the compilation seconds
(the first steps' time beyond the compiled model's steady step), the steady tokens/s, and the
wall time of a 6000-step run: eager ``6000 x step``, compiled ``compilation + 6000 x step``. Usage::

    python experiments/bench.py                 # CPU, seed configuration
    python experiments/bench.py --compile       # torch.compile, dropout on and off, amortised over 6000 steps
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
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scratchmlm import Dropout, NoamScheduler, TransformerMLM, load_text  # noqa: E402
from scratchmlm.batches import random_windows  # noqa: E402
from scratchmlm.harness.build import RunData, make_optimizer  # noqa: E402
from scratchmlm.harness.config import TrainConfig  # noqa: E402
from scratchmlm.harness.precision import prepare_for_training  # noqa: E402
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


def build(kind: str, device: torch.device, dropout: float = 0.1):
    config = dict(vocab_size=SEED["vocab_size"], d_model=SEED["d_model"], num_heads=SEED["num_heads"],
                  num_layers=SEED["num_layers"], d_ff=SEED["d_ff"], max_len=SEED["seq_len"], dropout=dropout)
    torch.manual_seed(0)
    if kind == "scratchmlm":
        return TransformerMLM(**config).to(device)
    from torch_reference import TorchEncoderMLM
    return TorchEncoderMLM(**config).to(device)


def step_function(model: torch.nn.Module, device: torch.device, step_model: torch.nn.Module | None = None):
    """One training step of ``model`` as a run takes it (``step_model``: what the step calls, e.g. the
    compiled model; its parameters are ``model``'s)."""
    data = RunData.prepare(TrainConfig(), load_text("tinyshakespeare"))
    train_ids = data.train_ids.to(device)
    masker = data.masker.to(device)
    optimizer = make_optimizer(model.parameters(), TrainConfig())       # the Trainer's optimizer
    scheduler = NoamScheduler(optimizer, SEED["d_model"], warmup=2000)
    windows = torch.Generator(device=device).manual_seed(1)
    masks = torch.Generator(device=device).manual_seed(2)
    step_model = model if step_model is None else step_model

    def step():
        ids = random_windows(train_ids, SEED["batch_size"], SEED["seq_len"], windows)
        return train_step(step_model, ids, masker, masks, optimizer, scheduler, clip_norm=1.0)
    return step


def timed_steps(step, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` steps, the results read every ``LOG_EVERY`` steps (the Trainer's one
    synchronisation)."""
    synchronize(device)
    start = time.perf_counter()
    pending = []
    for number in range(1, steps + 1):
        pending.append(step())
        if number % LOG_EVERY == 0 or number == steps:
            float(torch.stack([r.loss for r in pending]).mean())    # what the Trainer's log reads
            pending = []
    return time.perf_counter() - start


def measure(kind: str, device_name: str, steps: int, warmup_steps: int) -> dict:
    """Time ``steps`` training steps of one model in this process, as a run pays for them: windows
    cut from the real corpus, the real masker, and the step's results read every ``LOG_EVERY``
    steps, after ``warmup_steps`` untimed steps."""
    device = torch.device(device_name)
    model = build(kind, device).train()
    step = step_function(model, device)
    for _ in range(warmup_steps):
        step()
    seconds = timed_steps(step, steps, device)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = steps * SEED["batch_size"] * SEED["seq_len"]
    return {"kind": kind, "parameters": sum(p.numel() for p in model.parameters()),
            "tokens_per_second": tokens / seconds,
            "ms_per_step": 1000 * seconds / steps, "peak_rss_mib": peak_kib / 1024,
            "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None}


FIRST_STEPS = 3       # the compiled model compiles its forward in step 1 and its backward in step 1's backward


def measure_compile(engine: str, dropout: float, device_name: str, steps: int) -> dict:
    """One engine ("eager" or "compiled") of the scratchmlm model at ``dropout``, in this process:
    the seconds of the first ``FIRST_STEPS`` steps (where compilation happens), then ``steps``
    timed steps after 20 more warm-up steps."""
    device = torch.device(device_name)
    model = build("scratchmlm", device, dropout).train()
    step_model = prepare_for_training(model, device, "fp32", compile=engine == "compiled")
    step = step_function(model, device, step_model)
    first_seconds = timed_steps(step, FIRST_STEPS, device)
    timed_steps(step, 20, device)
    seconds = timed_steps(step, steps, device)
    return {"engine": engine, "dropout": dropout, "first_seconds": first_seconds,
            "ms_per_step": 1000 * seconds / steps,
            "tokens_per_second": steps * SEED["batch_size"] * SEED["seq_len"] / seconds,
            "graph_breaks": graph_breaks() if engine == "compiled" else 0}


def graph_breaks() -> int:
    """How many times dynamo broke the graph so far in this process."""
    from torch._dynamo.utils import counters
    return sum(counters["graph_break"].values())


def compile_report(device_name: str, steps: int, run_steps: int = 6000) -> None:
    """Eager against compiled, dropout 0.1 and 0; each measurement a fresh process and cache."""
    print(f"torch.compile against eager, scratchmlm seed model, fp32, {torch.get_num_threads()} threads; "
          f"{steps} timed steps each, every process with an empty compilation cache\n")
    print(f"{'dropout':>7}  {'engine':<9}{'tokens/s':>10}{'ms/step':>9}{'compile s':>11}{'graph breaks':>14}"
          f"{f'{run_steps}-step run':>16}")
    for dropout in (0.1, 0.0):
        results = {}
        for engine in ("eager", "compiled"):
            with tempfile.TemporaryDirectory(prefix="scratchmlm-bench-") as cache:
                output = subprocess.run(
                    [sys.executable, __file__, "--measure-compile", engine, "--dropout", str(dropout),
                     "--device", device_name, "--steps", str(steps)],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "PYTHONPATH": str(HERE.parent), "TORCHINDUCTOR_CACHE_DIR": cache})
            results[engine] = json.loads(output.stdout.strip().splitlines()[-1])
        for engine, result in results.items():
            step_seconds = result["ms_per_step"] / 1000
            # compilation: what the first steps took beyond the same number of steady steps
            # (for eager, the same difference: the first steps' warm-up of the allocator and kernels)
            compile_seconds = max(0.0, result["first_seconds"] - FIRST_STEPS * step_seconds)
            result["run_seconds"] = compile_seconds + run_steps * step_seconds
            print(f"{dropout:>7}  {engine:<9}{result['tokens_per_second']:>10,.0f}{result['ms_per_step']:>9.1f}"
                  f"{compile_seconds:>11.1f}{result['graph_breaks']:>14}"
                  f"{result['run_seconds']:>14.0f} s")
        eager, compiled = results["eager"], results["compiled"]
        print(f"{'':>9}compiled / eager: {compiled['tokens_per_second'] / eager['tokens_per_second']:.2f}x per step, "
              f"{eager['run_seconds'] / compiled['run_seconds']:.2f}x over a {run_steps}-step run "
              f"(compilation included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per round (default 100; 300 with --compile)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true",
                        help="measure torch.compile against eager, dropout 0.1 and 0, amortised over 6000 steps")
    parser.add_argument("--measure", choices=["scratchmlm", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--measure-compile", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    parser.add_argument("--dropout", type=float, default=0.1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:   # child process: one model, one round, JSON on stdout
        print(json.dumps(measure(args.measure, args.device, args.steps, args.warmup_steps)))
        return
    if args.measure_compile:   # child process: one engine at one dropout, JSON on stdout
        print(json.dumps(measure_compile(args.measure_compile, args.dropout, args.device, args.steps)))
        return
    if args.compile:
        compile_report(args.device, args.steps or 300)
        return
    args.steps = args.steps or 100

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
