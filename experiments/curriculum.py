"""A sequence-length curriculum against fixed windows, at the same number of tokens.

The curriculum trains the first half of the steps on 16-character windows (batch 128) and the
second half on 32-character windows (batch 64); the baseline uses 32-character windows (batch 64)
throughout. Both see 2048 tokens per step. Expected outcome: **no gain, or a small loss**: short
windows give less context per prediction, and at 32 characters attention costs little, so the
curriculum saves almost no time on a CPU either.

    python experiments/curriculum.py [--steps 2000] [--seeds 0 1]
"""

from pathlib import Path

from common import Variant, parse_arguments, run_experiment

from scratchmlm.harness.config import RunConfig
from scratchmlm.harness.trainer import Trainer


def short_then_long(config: RunConfig, run_dir: Path) -> None:
    """One run: ``steps // 2`` steps of 16 x 128, then the rest at 32 x 64 (the run's own
    validation set is at 32 characters throughout)."""
    trainer = Trainer(config, run_dir)
    train = trainer.config.train
    total = train.steps
    train.steps, train.seq_len, train.batch_size = total // 2, 16, 128
    trainer.train()
    train.steps, train.seq_len, train.batch_size = total, 32, 64
    trainer.train()


if __name__ == "__main__":
    run_experiment("curriculum", [
        Variant("fixed 32 x 64"),
        Variant("16 x 128, then 32 x 64", custom=short_then_long),
    ], parse_arguments(__doc__.splitlines()[0]))
