"""Print a run's validation results against steps and wall time, beside its baselines.

    python experiments/report.py runs/seed            # a Markdown table, as in the README

Wall time is measured from the run's first training record back to its start (the first record's
time minus the time its steps took), so it counts training and evaluation, not the set-up.
"""

import argparse
import json
import sys
from pathlib import Path

from scratchmlm.harness.run_dir import read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    records = read_metrics(args.run / "metrics.jsonl")
    config = json.loads((args.run / "config.json").read_text())
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    baselines = [r for r in records if r["type"] == "baseline"]
    if not train or not evals:
        sys.exit(f"{args.run} has no training or evaluation records yet")
    tokens_per_step = config["train"]["batch_size"] * config["train"]["seq_len"]
    first = train[0]
    start = first["time"] - first["step"] * tokens_per_step / first["tokens_per_second"]
    print(f"validation fingerprint {evals[0]['fingerprint']}; {evals[0]['count']} scored positions\n")
    print("| step | wall time | top-1 | top-5 | cross-entropy | perplexity | top-1 [MASK] / random / unchanged |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in evals:
        kinds = " / ".join(f"{r['by_kind'][k]['top1']:.3f}" for k in ("mask", "random", "unchanged"))
        print(f"| {r['step']} | {r['time'] - start:.0f} s | {r['top1']:.3f} | {r['top5']:.3f} | "
              f"{r['loss']:.3f} | {r['perplexity']:.2f} | {kinds} |")
    for r in baselines:
        kinds = " / ".join(f"{r['by_kind'][k]['top1']:.3f}" for k in ("mask", "random", "unchanged"))
        print(f"| {r['name']} baseline | — | {r['top1']:.3f} | {r['top5']:.3f} | {r['loss']:.3f} | "
              f"{r['perplexity']:.2f} | {kinds} |")
    speeds = sorted(r["tokens_per_second"] for r in train)
    print(f"\ntraining speed: median {speeds[len(speeds) // 2]:,.0f} tokens/s over {len(train)} log intervals")


if __name__ == "__main__":
    main()
