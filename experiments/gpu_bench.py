"""GPU speed of the seed model, measured the way a run pays for it, and the large-batch mode.

``throughput`` trains the seed model with the real ``Trainer`` (random windows, masking, forward,
loss, backward, clipping, Adam, Noam, the metrics log) for each batch size and engine (fp32 / bf16
autocast, eager / torch.compile, written-out / fused attention) and reads the tokens/s the run
itself logged (evaluation excluded; the first intervals, which pay for compilation, dropped). MFU
is tokens/s x training FLOPs per token / the matrix-product peak measured in the same run for the
same precision (8192^3 products; fp32 without TF32, as the model runs).

``large-batch`` trains to a validation top-1 target on the frozen set: the seed batch of 64 against
a large batch with the learning rate scaled (``--lr-scaling sqrt``) and unscaled, reporting the
training time, steps and tokens each needed.

    python experiments/gpu_bench.py throughput --out experiments/results/gpu_h100
    python experiments/gpu_bench.py large-batch --out experiments/results/gpu_h100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from scratchmlm import load_text  # noqa: E402
from scratchmlm.harness.config import ModelConfig, RunConfig, TrainConfig  # noqa: E402
from scratchmlm.harness.run_dir import read_metrics  # noqa: E402
from scratchmlm.harness.trainer import Trainer  # noqa: E402

sys.path.insert(0, str(HERE))
from bench import training_flops_per_token  # noqa: E402


def matmul_peak_tflops(dtype: torch.dtype, size: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * size ** 3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


def train(text: str, **settings) -> tuple[Trainer, list[dict]]:
    """One run of the seed model with ``settings`` overriding TrainConfig; its metrics records."""
    model = ModelConfig()
    train = TrainConfig(device="cuda", **settings)
    with tempfile.TemporaryDirectory() as directory:
        trainer = Trainer(RunConfig(model, train), Path(directory) / "run", text=text, progress=False)
        trainer.train()
        return trainer, read_metrics(trainer.run.metrics)


def throughput(args, text: str) -> list[dict]:
    flops = training_flops_per_token(d_model=128, d_ff=256, num_layers=6, seq_len=32, vocab_size=68)
    peaks = {"fp32": matmul_peak_tflops(torch.float32), "bf16": matmul_peak_tflops(torch.bfloat16)}
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; measured matmul peak: "
          f"fp32 {peaks['fp32']:.0f} TFLOP/s, bf16 {peaks['bf16']:.0f} TFLOP/s; "
          f"{flops / 1e6:.2f} MFLOP per training token", flush=True)
    rows = []
    for batch in args.batches:
        for precision, compile, fused in [("fp32", False, False), ("bf16", False, False),
                                          ("bf16", False, True), ("bf16", True, False), ("bf16", True, True)]:
            started = time.perf_counter()
            _, records = train(text, steps=args.steps, batch_size=batch, precision=precision, compile=compile,
                               fused_attention=fused, log_every=args.steps // 10, eval_every=args.steps,
                               sample_every=10 * args.steps)
            intervals = [r for r in records if r["type"] == "train"]
            tps = statistics.median(r["tokens_per_second"] for r in intervals[2:])
            row = {"batch": batch, "precision": precision, "compile": compile, "fused_attention": fused,
                   "tokens_per_second": tps, "ms_per_step": 1000 * batch * 32 / tps,
                   "mfu": tps * flops / (peaks[precision] * 1e12),
                   "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
                   "wall_seconds": time.perf_counter() - started}
            torch.cuda.reset_peak_memory_stats()
            rows.append(row)
            print(f"batch {batch:>6}  {precision}  compile {str(compile):<5}  fused {str(fused):<5}  "
                  f"{tps / 1e6:8.2f}M tokens/s  {row['ms_per_step']:7.2f} ms/step  MFU {100 * row['mfu']:5.1f}%  "
                  f"peak {row['peak_memory_gib']:.1f} GiB  ({row['wall_seconds']:.0f} s with compilation)",
                  flush=True)
    return [{"device": torch.cuda.get_device_name(), "torch": torch.__version__, "matmul_peak_tflops": peaks,
             "flops_per_token": flops}, *rows]


def large_batch(args, text: str) -> list[dict]:
    runs = [
        ("seed batch 64, warm-up 500, factor 0.5", dict(batch_size=64, warmup=500, noam_factor=0.5,
                                                      steps=8000, eval_every=250)),
        (f"batch {args.large}, lr x sqrt(k), warm-up 100", dict(batch_size=args.large, warmup=100, noam_factor=0.5,
                                                                lr_scaling="sqrt", steps=1500, eval_every=50)),
        (f"batch {args.large}, lr unscaled, warm-up 100", dict(batch_size=args.large, warmup=100, noam_factor=0.5,
                                                               steps=1500, eval_every=50)),
    ]
    rows = []
    for name, settings in runs:
        _, records = train(text, precision="bf16", compile=True, log_every=settings["eval_every"],
                           sample_every=100_000, early_stopping_patience=0, **settings)
        seconds, tokens, reached = 0.0, 0, None
        for record in records:
            if record["type"] == "train":
                interval_tokens = record["steps"] * settings["batch_size"] * 32
                tokens += interval_tokens
                seconds += interval_tokens / record["tokens_per_second"]
            elif record["type"] == "eval" and reached is None and record["top1"] >= args.target:
                reached = {"step": record["step"], "train_seconds": seconds, "tokens": tokens}
        best = max(r["top1"] for r in records if r["type"] == "eval")
        row = {"run": name, **settings, "target": args.target, "reached": reached, "best_top1": best,
               "total_train_seconds": seconds}
        rows.append(row)
        when = (f"step {reached['step']}, {reached['train_seconds']:.1f} s, {reached['tokens'] / 1e6:.0f}M tokens"
                if reached else "not reached")
        print(f"{name:<42} top-1 {args.target}: {when:<40} best {best:.3f}", flush=True)
    return rows


def compile_modes(args, text: str) -> list[dict]:
    """bf16 + torch.compile with each of torch.compile's modes (and SDPA's flash kernel) at each batch."""
    import functools

    import scratchmlm.harness.precision as precision

    flops = training_flops_per_token(d_model=128, d_ff=256, num_layers=6, seq_len=32, vocab_size=68)
    peak = matmul_peak_tflops(torch.bfloat16)
    plain_compile = torch.compile
    rows = []
    for batch in args.batches:
        for mode in args.modes:
            mode, _, fused = mode.partition("+")
            fused = fused == "fused"
            precision.torch.compile = functools.partial(plain_compile, mode=mode)
            torch._dynamo.reset()
            started = time.perf_counter()
            try:
                _, records = train(text, steps=args.steps, batch_size=batch, precision="bf16", compile=True,
                                   fused_attention=fused, log_every=args.steps // 10, eval_every=args.steps,
                                   sample_every=10 * args.steps)
            except Exception as error:     # a mode that fails here is reported, not fatal
                print(f"batch {batch} mode {mode} fused {fused}: failed: {type(error).__name__}: "
                      f"{str(error)[:200]}", flush=True)
                continue
            finally:
                precision.torch.compile = plain_compile
            tps = statistics.median([r["tokens_per_second"] for r in records if r["type"] == "train"][2:])
            row = {"batch": batch, "mode": mode, "fused_attention": fused, "tokens_per_second": tps,
                   "mfu": tps * flops / (peak * 1e12), "wall_seconds": time.perf_counter() - started}
            rows.append(row)
            print(f"batch {batch:>6}  {mode:<28} fused {str(fused):<5} {tps / 1e6:8.2f}M tokens/s  "
                  f"MFU {100 * row['mfu']:5.1f}%  ({row['wall_seconds']:.0f} s with compilation)", flush=True)
    return rows


def profile(args, text: str) -> list[dict]:
    """The GPU kernels of a few training steps at ``--batches[0]``, bf16 and compiled: where time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from scratchmlm.batches import random_windows
    from scratchmlm.step import train_step

    batch = args.batches[0]
    with tempfile.TemporaryDirectory() as directory:
        config = RunConfig(ModelConfig(), TrainConfig(device="cuda", batch_size=batch, precision="bf16",
                                                      compile=True, steps=10))
        trainer = Trainer(config, Path(directory) / "run", text=text, progress=False)

        def step():
            ids = random_windows(trainer.train_ids, batch, 32, trainer.batch_rng)
            return train_step(trainer.step_model, ids, trainer.masker, trainer.mask_rng, trainer.optimizer,
                              trainer.scheduler, 1.0)

        trainer.step_model.train()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
    print(table, flush=True)
    return [{"batch": batch, "table": table}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["throughput", "large-batch", "profile", "compile-modes"])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 16384])
    parser.add_argument("--steps", type=int, default=300, help="steps per throughput run")
    parser.add_argument("--large", type=int, default=4096, help="the large batch of the large-batch runs")
    parser.add_argument("--target", type=float, default=0.630, help="validation top-1 to reach")
    parser.add_argument("--modes", nargs="+", default=["default", "max-autotune-no-cudagraphs", "default+fused",
                                                        "reduce-overhead"],
                        help="torch.compile modes for compile-modes; +fused adds SDPA attention")
    parser.add_argument("--data", default="tinyshakespeare")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench.py needs a CUDA GPU; the CPU benchmark is experiments/bench.py")
    text = load_text(args.data)
    rows = {"throughput": throughput, "large-batch": large_batch, "profile": profile,
            "compile-modes": compile_modes}[args.what](args, text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.what}.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
