"""Time to accuracy: train until validation top-1 on the frozen set reaches a target.

Any ``scratchmlm train`` flag after ``--`` sets the run (the seed configuration by default). The
run evaluates every ``--eval-every`` steps and stops at the first evaluation that reaches the target
(``--stop-at-top1``). It reports training wall time (evaluation excluded; it is reported on its
own), steps, tokens, peak resident memory, and the curve, and records all of it with the device,
threads and versions in ``experiments/results/time_to_accuracy/<name>.json``.

    python experiments/time_to_accuracy.py --name seed                       # the seed configuration
    python experiments/time_to_accuracy.py --name warmup500 -- --warmup 500 --noam-factor 0.5

Time it on a quiet machine: another job on the same cores can slow training several-fold.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import scratchmlm  # noqa: E402
from scratchmlm.harness.cli import _run_config, build_parser  # noqa: E402
from scratchmlm.harness.run_dir import read_metrics  # noqa: E402
from scratchmlm.harness.trainer import Trainer  # noqa: E402


def processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarise(records: list[dict], batch_tokens: int, target: float) -> dict:
    """Training seconds and tokens up to each evaluation, and the first that reached ``target``."""
    train_seconds, tokens, eval_seconds, curve = 0.0, 0, 0.0, []
    for record in records:
        if record["type"] == "train":
            interval_tokens = record["steps"] * batch_tokens
            tokens += interval_tokens
            train_seconds += interval_tokens / record["tokens_per_second"]
        elif record["type"] == "eval":
            eval_seconds += record.get("seconds", 0.0)
            curve.append({"step": record["step"], "train_seconds": round(train_seconds, 2), "tokens": tokens,
                          "top1": record["top1"], "mask_top1": record["by_kind"]["mask"]["top1"],
                          "loss": record["loss"]})
    reached = next((point for point in curve if point["top1"] >= target), None)
    return {"reached": reached, "curve": curve, "train_seconds": train_seconds, "tokens": tokens,
            "eval_seconds": eval_seconds, "evaluations": len(curve)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Flags after -- go to scratchmlm train (e.g. -- --warmup 500).")
    parser.add_argument("--name", required=True, help="name of the result file")
    parser.add_argument("--target", type=float, default=0.630, help="validation top-1 to reach (default 0.630)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--max-steps", type=int, default=12000)
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/tta-<name>")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "time_to_accuracy")
    args, train_flags = parser.parse_known_args()
    train_flags = [flag for flag in train_flags if flag != "--"]
    train_args = build_parser().parse_args(["train", *train_flags])
    config = _run_config(train_args)
    config.train.steps = args.max_steps
    config.train.eval_every = args.eval_every
    config.train.stop_at_top1 = args.target
    config.train.sample_every = 10 * args.max_steps
    run_dir = args.run_dir or Path("runs") / f"tta-{args.name}"

    started = time.perf_counter()
    trainer = Trainer(config, run_dir)
    trainer.train()
    wall = time.perf_counter() - started
    cfg = trainer.config.train
    result = summarise(read_metrics(trainer.run.metrics), cfg.batch_size * cfg.seq_len, args.target)
    result.update({
        "name": args.name, "target": args.target, "train_flags": train_flags, "config": trainer.config.to_dict(),
        "wall_seconds": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(trainer.device), "processor": processor_name(), "threads": torch.get_num_threads(),
        "versions": {"scratchmlm": scratchmlm.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    })
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'step':>6} {'train s':>8} {'tokens':>10} {'top-1':>6} {'[MASK]':>7} {'CE':>6}")
    for point in result["curve"]:
        print(f"{point['step']:>6} {point['train_seconds']:>8.1f} {point['tokens']:>10,} {point['top1']:>6.3f} "
              f"{point['mask_top1']:>7.3f} {point['loss']:>6.3f}")
    reached = result["reached"]
    print(f"\n{args.name}: " + (f"top-1 {args.target} reached at step {reached['step']} after "
                               f"{reached['train_seconds']:.0f} s of training" if reached else
                               f"top-1 {args.target} not reached in {cfg.steps} steps")
          + f"; evaluation {result['eval_seconds']:.1f} s in all ({result['evaluations']} evaluations); "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB; {result['threads']} threads on {result['processor']}")


if __name__ == "__main__":
    main()
