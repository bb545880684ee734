"""Short ablations of the seed configuration: which defaults make the model learn sooner?

Each variant trains for ``--steps`` steps (same seed, same batches, same masks, same frozen
validation set) and reports validation top-1 overall and on [MASK] positions at every evaluation.
Progress shows as two bars, the variants and the current variant's training steps (each line of
results is printed as its variant finishes); ``TQDM_DISABLE=1`` silences the bars.

    python experiments/ablation.py --steps 1000 --variants seed post-norm learned-positions
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from scratchmlm.harness.config import ModelConfig, RunConfig, TrainConfig
from scratchmlm.harness.trainer import Trainer

VARIANTS = {
    "seed": {},
    "post-norm": {"norm_first": False},
    "learned-positions": {"positional": "learned"},
    "relu": {"activation": "relu"},
    "init-0.05": {"init_std": 0.05},
    "no-dropout": {"dropout": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="scratchmlm-ablation-"))
    print(f"{len(args.variants)} variants x {args.steps} steps; run directories in {root}", flush=True)
    variants = tqdm(args.variants, desc="variants", unit="variant", dynamic_ncols=True)
    for name in variants:
        variants.set_postfix(variant=name)
        config = RunConfig(ModelConfig(**VARIANTS[name]),
                           TrainConfig(steps=args.steps, eval_every=args.eval_every, sample_every=args.steps))
        started = time.perf_counter()
        trainer = Trainer(config, root / name)          # its own bar counts the steps
        trainer.train()
        if trainer.stopped_by is not None:       # Ctrl-C stops the whole script, not just this variant
            break
        evals = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in evals if r["type"] == "eval"]
        curve = "  ".join(f"{r['step']}: {r['top1']:.3f}/{r['by_kind']['mask']['top1'] or 0:.3f}" for r in evals)
        tqdm.write(f"{name:>18} ({time.perf_counter() - started:.0f} s)  top-1/[MASK] top-1 at  {curve}")


if __name__ == "__main__":
    main()
