"""Early stopping on validation loss, on a corpus small enough to overfit.

On the whole of Tiny Shakespeare the seed model does not overfit in a few thousand steps, so
this experiment trains on its first 20,000 characters only (18,000 to train on; the validation
split is the last 2,000 of them): the model memorises the training text, and the validation
loss turns up. (On the first 100,000 characters it did not, in 3000 steps: the validation loss
still fell at the end, 1.029, because random masks make every epoch a new task.) ``--early-stopping-patience 4`` stops after four evaluations without a better
validation loss, and ``best.pt`` keeps the best weights. Expected outcome: **the run stops well
before its step budget, at a best loss equal to the full run's best**, and the full run ends
with a clearly higher validation loss than its best (overfitting).

    python experiments/early_stopping.py [--steps 4000] [--seeds 0 1]
"""

import tempfile
from pathlib import Path

from common import Variant, parse_arguments, run_experiment

from scratchmlm.corpus import load_text

if __name__ == "__main__":
    args = parse_arguments(__doc__.splitlines()[0], steps=4000)
    small = Path(tempfile.mkdtemp(prefix="scratchmlm-small-")) / "shakespeare-20k.txt"
    small.write_text(load_text("tinyshakespeare")[:20_000], encoding="utf-8")
    rows = run_experiment("early_stopping", [
        Variant("full budget", train={"data": str(small)}),
        Variant("early stopping (patience 4)", train={"data": str(small), "early_stopping_patience": 4}),
    ], args)
    print("\nOn the run's own validation split: the last and the best validation loss")
    for row in rows:
        print(f"{row['variant']:<28} last {row['last_own_loss']:.3f}  best {row['best_own_loss']:.3f}  "
              f"after {row['steps']:.0f} steps")
