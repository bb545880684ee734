"""Sinusoidal against learned positional encodings.

The sinusoid table is fixed; a learned table has to discover positions from data (32 x 128
parameters here). Expected outcome: over 32-character windows both are **within about a point**
(the learned table has few positions to learn, and plenty of data for them), sinusoidal slightly
ahead early in training.

    python experiments/positional_encoding.py [--steps 2000] [--seeds 0 1]
"""

from common import Variant, parse_arguments, run_experiment

if __name__ == "__main__":
    run_experiment("positional_encoding", [
        Variant("sinusoidal", model={"positional": "sinusoidal"}),
        Variant("learned", model={"positional": "learned"}),
    ], parse_arguments(__doc__.splitlines()[0]))
