"""bf16 autocast against fp32 on the CPU, over seeds: speed and validation accuracy after 1000 steps.

For each seed, ``scratchmlm train --steps 1000 --warmup 500 --noam-factor 0.5`` (the seed model,
dropout 0.1) runs once in fp32 and once with ``--precision bf16``, one run after another in its
own process, and is scored on the frozen validation set at step 1000. The table gives the median
tokens/s the run logged (evaluation excluded), top-1 overall and on [MASK] positions, and the
cross-entropy; the last line the mean and the largest bf16 - fp32 difference in top-1 over the
seeds. Each run's ``metrics.jsonl`` and ``config.json`` are kept in
``experiments/results/precision_cpu/`` as ``<precision>-seed<N>.metrics.jsonl`` and
``<precision>-seed<N>.config.json``, and the table in ``table.md``.

    python experiments/precision_seeds.py                  # seeds 0 1 2 (about 10 minutes on 2 cores)
    python experiments/precision_seeds.py --seeds 0 --steps 200
    python experiments/precision_seeds.py --report         # only rewrite the table from saved metrics
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from scratchmlm.harness.run_dir import read_metrics  # noqa: E402

RESULTS = HERE / "results" / "precision_cpu"
PRECISIONS = ("fp32", "bf16")
SCHEDULE = ["--warmup", "500", "--noam-factor", "0.5"]


def run(precision: str, seed: int, steps: int, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="scratchmlm-precision-") as root:
        run_dir = Path(root) / "run"
        command = [sys.executable, "-m", "scratchmlm", "train", "--run-dir", str(run_dir), "--quiet",
                   "--steps", str(steps), "--eval-every", str(steps), "--sample-every", str(10 * steps),
                   "--seed", str(seed), "--precision", precision, *SCHEDULE]
        subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        for name in ("metrics.jsonl", "config.json"):
            shutil.copyfile(run_dir / name, out / f"{precision}-seed{seed}.{name}")


def summary(path: Path) -> dict:
    """Median logged tokens/s and the last evaluation of one run's metrics."""
    records = read_metrics(path)
    speeds = [r["tokens_per_second"] for r in records if r["type"] == "train"]
    final = [r for r in records if r["type"] == "eval"][-1]
    return {"tokens_per_second": statistics.median(speeds), "step": final["step"], "top1": final["top1"],
            "mask_top1": final["by_kind"]["mask"]["top1"], "loss": final["loss"]}


def report(out: Path, seeds: list[int]) -> str:
    runs = {(precision, seed): summary(out / f"{precision}-seed{seed}.metrics.jsonl")
            for seed in seeds for precision in PRECISIONS
            if (out / f"{precision}-seed{seed}.metrics.jsonl").exists()}
    lines = ["| seed | precision | tokens/s | top-1 | [MASK] top-1 | cross-entropy |",
             "|---:|---|---:|---:|---:|---:|"]
    for (precision, seed), result in runs.items():
        lines.append(f"| {seed} | {precision} | {result['tokens_per_second']:,.0f} | {result['top1']:.3f} | "
                     f"{result['mask_top1']:.3f} | {result['loss']:.3f} |")
    paired = [seed for seed in seeds if ("fp32", seed) in runs and ("bf16", seed) in runs]
    if paired:
        gaps = [runs["bf16", seed]["top1"] - runs["fp32", seed]["top1"] for seed in paired]
        speedups = [runs["bf16", seed]["tokens_per_second"] / runs["fp32", seed]["tokens_per_second"]
                    for seed in paired]
        step = runs["fp32", paired[0]]["step"]
        lines += ["", f"bf16 - fp32 top-1 at step {step}: mean {100 * statistics.mean(gaps):+.2f} points, "
                      f"largest {100 * max(gaps, key=abs):+.2f} points over seeds {paired}; bf16 "
                      f"{min(speedups):.2f}-{max(speedups):.2f}x the tokens/s of fp32."]
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS.relative_to(HERE.parent)}")
    parser.add_argument("--report", action="store_true", help="only rewrite the table from saved metrics")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for seed in args.seeds:
            for precision in PRECISIONS:
                print(f"== seed {seed}, {precision}", flush=True)
                run(precision, seed, args.steps, args.out)
    print(report(args.out, args.seeds))


if __name__ == "__main__":
    main()
