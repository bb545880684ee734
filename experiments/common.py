"""What every experiment script shares: train a few variants over a few seeds, score each on the
same frozen validation set, and print (and save) one results table.

The **frozen validation set** of every experiment is the seed one: Tiny Shakespeare's last 10%,
1024 windows of 32 characters, masked once by BERT's masker (15%, 80/10/10, seed 1234). Its
fingerprint is printed with the table. A variant that trains differently (another masking rate,
whole words, short windows) is still judged on these same positions, with its best checkpoint
(lowest validation loss on its own set). Every run starts from the ``fast`` preset (dropout 0,
warm-up 500) unless a variant says otherwise.

Each table row is one variant: the mean over seeds of the overall top-1, the [MASK]-position
top-1 and the cross-entropy, with the spread (max - min over seeds) beside the mean, the steps,
and the wall time. The results also go to ``experiments/results/<experiment>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

import scratchmlm
from scratchmlm.harness.build import RunData
from scratchmlm.harness.config import RunConfig, TrainConfig, preset
from scratchmlm.evaluate import evaluate
from scratchmlm.harness.run_dir import load_run
from scratchmlm.harness.trainer import Trainer

RESULTS = Path(__file__).parent / "results"


@dataclass
class Variant:
    """One arm of an experiment: settings over the ``fast`` preset, or a function that trains it."""

    label: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    # (config, run_dir) -> None, for variants that are not one plain Trainer run (a curriculum)
    custom: Callable[[RunConfig, Path], None] | None = None


def parse_arguments(description: str, steps: int = 2000, seeds: int = 2) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help=f"training steps per run (default {steps})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(seeds)),
                        help=f"seeds to repeat every variant with (default {list(range(seeds))})")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"where the results table and JSON go (default {RESULTS})")
    return parser.parse_args()


def seed_validation_set():
    """The seed configuration's frozen validation set and its character tokenizer."""
    data = RunData.prepare(TrainConfig())
    return data.valid, data.tokenizer


def run_experiment(name: str, variants: list[Variant], args: argparse.Namespace,
                   eval_every: int = 250) -> list[dict]:
    """Train every variant with every seed, score it, print the table; returns the rows."""
    root = args.out or Path(tempfile.mkdtemp(prefix=f"scratchmlm-{name}-"))
    valid, tokenizer = seed_validation_set()     # on the CPU; evaluate() moves each batch
    runs = [(variant, seed) for variant in variants for seed in args.seeds]
    print(f"{name}: {len(variants)} variants x seeds {args.seeds} x {args.steps} steps; runs in {root}", flush=True)
    results = []
    for variant, seed in tqdm(runs, desc=name, unit="run", dynamic_ncols=True):
        config = preset("fast")
        config.train.steps, config.train.seed, config.train.device = args.steps, seed, args.device
        config.train.eval_every = eval_every
        config.train.sample_every = args.steps
        for key, value in variant.model.items():
            setattr(config.model, key, value)
        for key, value in variant.train.items():
            setattr(config.train, key, value)
        run_dir = root / f"{variant.label.replace(' ', '_').replace('/', '-')}-seed{seed}"
        started = time.perf_counter()
        if variant.custom is not None:
            variant.custom(config, run_dir)
        else:
            Trainer(config, run_dir).train()
        seconds = time.perf_counter() - started
        model, run_tokenizer, run_config, state = load_run(run_dir, "best", args.device)
        scored_on = valid
        if run_tokenizer.vocab != tokenizer.vocab:     # another text: its own frozen set
            scored_on = RunData.prepare(run_config.train, tokenizer=run_tokenizer).valid
        scores = evaluate(model, scored_on)
        evals = [r for r in (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
                 if r["type"] == "eval"]
        results.append({"variant": variant.label, "seed": seed, "seconds": seconds, "best_step": state["step"],
                        "steps": evals[-1]["step"], "top1": scores.overall.top1,
                        "mask_top1": scores.by_kind["mask"].top1, "loss": scores.overall.loss,
                        "fingerprint": scored_on.fingerprint, "last_own_loss": evals[-1]["loss"],
                        "best_own_loss": min(r["loss"] for r in evals),
                        "curve": [(r["step"], r["top1"], r["loss"]) for r in evals]})
    rows = table(variants, results)
    fingerprints = sorted({r["fingerprint"][:12] for r in results})
    print(f"\n{name}, best checkpoints scored on the frozen validation set (fingerprint {', '.join(fingerprints)}):")
    print(format_table(rows))
    save(name, args, variants, results, rows, valid.fingerprint)
    return rows


def table(variants: list[Variant], results: list[dict]) -> list[dict]:
    rows = []
    for variant in variants:
        mine = [r for r in results if r["variant"] == variant.label]
        row = {"variant": variant.label, "seeds": len(mine)}
        for key in ("top1", "mask_top1", "loss", "best_step", "steps", "seconds", "last_own_loss", "best_own_loss"):
            values = [r[key] for r in mine]
            row[key] = statistics.mean(values)
            row[key + "_spread"] = max(values) - min(values)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'variant':<28} {'top-1':>15} {'[MASK] top-1':>15} {'CE':>15} {'best step':>9} {'steps':>6} "
             f"{'s/run':>6}", "-" * 101]
    for row in rows:
        cells = [f"{row[key]:.3f} ± {row[key + '_spread'] / 2:.3f}" for key in ("top1", "mask_top1", "loss")]
        lines.append(f"{row['variant']:<28} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
                     f"{row['best_step']:>9.0f} {row['steps']:>6.0f} {row['seconds']:>6.0f}")
    lines.append(f"(mean over {rows[0]['seeds']} seed(s) ± half the spread between seeds)")
    return "\n".join(lines)


def save(name: str, args, variants, results, rows, fingerprint: str) -> None:
    out = args.results / name
    out.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    record = {
        "experiment": name, "steps": args.steps, "seeds": args.seeds, "fingerprint": fingerprint,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "scratchmlm": scratchmlm.__version__,
        "variants": [{"label": v.label, "model": v.model, "train": v.train} for v in variants],
        "rows": rows, "runs": results,
    }
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "table.txt").write_text(format_table(rows) + "\n")
