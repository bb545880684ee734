"""Masking rate: select 15%, 30% or 40% of the characters for prediction.

More selected positions give more training signal per step, but each prediction sees less
context. Expected outcome (Wettig et al. 2023, "Should You Mask 15% in Masked Language
Modeling?", found 40% as good as or better than 15% for large English models): at this scale,
with single characters and 32-character windows, context is what infilling a character needs, so
we expect **15% and 30% within about a point of each other and 40% clearly lower** on the 15%
frozen validation set. The table shows what happened; ``experiments/README.md`` discusses it.

    python experiments/masking_rate.py [--steps 2000] [--seeds 0 1]
"""

from common import Variant, parse_arguments, run_experiment

if __name__ == "__main__":
    run_experiment("masking_rate", [
        Variant("select 15%", train={"select_prob": 0.15}),
        Variant("select 30%", train={"select_prob": 0.30}),
        Variant("select 40%", train={"select_prob": 0.40}),
    ], parse_arguments(__doc__.splitlines()[0]))
