"""Which levers buy time to accuracy on the CPU: one time-to-accuracy run per change to ``--preset fast``.

Each variant is ``experiments/time_to_accuracy.py`` in its own process (so each has its own
timing and peak memory): train until validation top-1 on the frozen set reaches 0.630, evaluating
every 250 steps, at most ``--max-steps`` steps. The runs go one after another, never side by side:
on a 2-core machine a second job would slow the first several-fold. The table gives the training
seconds to the target (evaluation excluded), the steps, the mean tokens/s, and the change against
``fast`` (seed 0). Results land in ``experiments/results/time_to_accuracy/cpu_ablation/``: one
JSON per run, ``table.md`` and ``time_to_accuracy.png`` (top-1 against training seconds).

    python experiments/speed_ablation.py                       # every variant (about an hour on 2 cores)
    python experiments/speed_ablation.py --variants fast bf16  # some of them
    python experiments/speed_ablation.py --report              # only rewrite table.md from the JSONs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "time_to_accuracy" / "cpu_ablation"

# name -> (what changes, flags for scratchmlm train on top of --preset fast)
VARIANTS = {
    "fast": ("`--preset fast`: dropout 0, warm-up 500, factor 1 (peak lr 3.95e-3)", []),
    "fast-seed1": ("the same, seed 1", ["--seed", "1"]),
    "fast-seed2": ("the same, seed 2", ["--seed", "2"]),
    "warmup-250": ("warm-up 250 (peak 5.6e-3)", ["--warmup", "250"]),
    "warmup-1000": ("warm-up 1000 (peak 2.8e-3)", ["--warmup", "1000"]),
    "peak-x0.5": ("peak and decay halved: factor 0.5 (peak 2.0e-3)", ["--noam-factor", "0.5"]),
    "peak-x1.5": ("peak and decay x1.5: factor 1.5 (peak 5.9e-3)", ["--noam-factor", "1.5"]),
    "dropout-0.1": ("dropout 0.1, as in the seed configuration", ["--dropout", "0.1"]),
    "batch-128": ("batch 128, warm-up 250", ["--batch-size", "128", "--warmup", "250"]),
    "beta2-0.999": ("Adam beta2 0.999 (torch's default) instead of 0.98", ["--adam-beta2", "0.999"]),
    "adamw-0.01": ("AdamW, decoupled weight decay 0.01", ["--optimizer", "adamw", "--weight-decay", "0.01"]),
    "bf16": ("bf16 autocast", ["--precision", "bf16"]),
    "bf16-seed1": ("bf16 autocast, seed 1", ["--precision", "bf16", "--seed", "1"]),
    "bf16-seed2": ("bf16 autocast, seed 2", ["--precision", "bf16", "--seed", "2"]),
    "compile": ("torch.compile (its compilation counted in the training time)", ["--compile", "true"]),
}


def run(name: str, out: Path, max_steps: int, eval_every: int) -> None:
    _, flags = VARIANTS[name]
    with tempfile.TemporaryDirectory(prefix="scratchmlm-ablation-") as root:
        # A fresh compilation cache for every run: --compile pays its whole compilation, as on first use.
        environment = {**os.environ, "TQDM_DISABLE": "1", "TORCHINDUCTOR_CACHE_DIR": str(Path(root) / "inductor")}
        command = [sys.executable, str(HERE / "time_to_accuracy.py"), "--name", name, "--out", str(out),
                   "--max-steps", str(max_steps), "--eval-every", str(eval_every),
                   "--run-dir", str(Path(root) / name), "--", "--preset", "fast", *flags]
        subprocess.run(command, check=True, env=environment)


def row(name: str, result: dict, baseline: dict | None) -> str:
    reached = result["reached"]
    curve = result["curve"]
    tokens_per_second = result["tokens"] / result["train_seconds"]
    if reached is None:
        best = max(point["top1"] for point in curve)
        return (f"| {name} | {VARIANTS[name][0]} | not in {curve[-1]['step']} steps (best {best:.3f}) | – | "
                f"{tokens_per_second / 1000:.1f}k | – |")
    change = ""
    if baseline is not None and baseline["reached"] is not None and name != "fast":
        change = f"{100 * (reached['train_seconds'] / baseline['reached']['train_seconds'] - 1):+.0f}%"
    return (f"| {name} | {VARIANTS[name][0]} | **{reached['train_seconds']:.0f} s** | {reached['step']} | "
            f"{tokens_per_second / 1000:.1f}k | {change} |")


def report(out: Path) -> str:
    """``table.md`` and ``time_to_accuracy.png`` from the runs saved in ``out``; returns the table."""
    results = {name: json.loads((out / f"{name}.json").read_text())
               for name in VARIANTS if (out / f"{name}.json").exists()}
    baseline = results.get("fast")
    lines = ["| run | change from `--preset fast` | training time to 0.630 | steps | tokens/s | vs fast |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [row(name, result, baseline) for name, result in results.items()]
    if results:
        any_result = next(iter(results.values()))
        lines.append("")
        lines.append(f"{any_result['threads']} threads on {any_result['processor']}, torch "
                     f"{any_result['versions']['torch']}; evaluation every "
                     f"{any_result['curve'][0]['step']} steps, not counted.")
        plot(results, out / "time_to_accuracy.png")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    return table


def plot(results: dict[str, dict], path: Path) -> None:
    """Validation top-1 against training seconds, one curve per run, and the 0.630 target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20").colors               # 20 distinct colours: no two runs share one
    for number, (name, result) in enumerate(results.items()):
        seconds = [point["train_seconds"] for point in result["curve"]]
        top1 = [point["top1"] for point in result["curve"]]
        style = "--" if "seed" in name else "-"
        axes.plot(seconds, top1, style, color="black" if name == "fast" else colours[number % len(colours)],
                  linewidth=2.5 if name == "fast" else 1.2, label=name)
    axes.axhline(results[next(iter(results))]["target"], color="black", linewidth=0.8, linestyle=":")
    axes.set_xlabel("training seconds (evaluation excluded)")
    axes.set_ylabel("validation top-1 (frozen set)")
    axes.set_title("Time to 0.630 top-1 on the CPU: changes to --preset fast")
    axes.legend(fontsize=8, ncol=2, loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--max-steps", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS.relative_to(HERE.parent)}")
    parser.add_argument("--report", action="store_true", help="only rewrite the table and figure from saved runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for name in args.variants:
            print(f"== {name}: {VARIANTS[name][0]}", flush=True)
            run(name, args.out, args.max_steps, args.eval_every)
    print(report(args.out))


if __name__ == "__main__":
    main()
