"""80/10/10 against 100% [MASK]: what the model is shown at the positions it must predict.

BERT shows [MASK] at 80% of the selected positions, a random character at 10% and the true one
at 10%, so that the model also learns to check and correct what it sees (downstream text has no
[MASK]). Expected outcome: on [MASK] positions the two are **within a point**; overall, on a
frozen set that holds random and unchanged positions too, **80/10/10 wins clearly**, because a
model that never saw an unchanged position at training time does not learn to copy it.

    python experiments/mask_token_mix.py [--steps 2000] [--seeds 0 1]
"""

from common import Variant, parse_arguments, run_experiment

if __name__ == "__main__":
    run_experiment("mask_token_mix", [
        Variant("80/10/10"),
        Variant("100% [MASK]", train={"mask_token_prob": 1.0, "random_token_prob": 0.0}),
    ], parse_arguments(__doc__.splitlines()[0]))
