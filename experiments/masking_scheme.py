"""Single characters, whole words or spans: what is selected for prediction (same 15% budget).

Whole-word masking hides every letter of a word at once; span masking hides runs of geometric
length (mean 3). Both make the task harder: a letter can no longer be read off its neighbours in
the same word. Expected outcome, scored on BERT-style single-character masks: **single-character
masking best**, since it trains exactly the task it is tested on, with whole-word and span some
points lower: these schemes pay off for downstream tasks that need words and phrases, which this
character-infill benchmark does not measure.

    python experiments/masking_scheme.py [--steps 2000] [--seeds 0 1]
"""

from common import Variant, parse_arguments, run_experiment

if __name__ == "__main__":
    run_experiment("masking_scheme", [
        Variant("characters (BERT)", train={"masking": "bert"}),
        Variant("whole words", train={"masking": "whole-word"}),
        Variant("spans (mean 3)", train={"masking": "span", "span_mean": 3.0}),
    ], parse_arguments(__doc__.splitlines()[0]))
