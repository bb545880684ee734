"""Pre-norm against post-norm encoder layers.

Post-norm (the original Transformer, BERT) normalises after each residual addition; pre-norm
normalises the input of each sub-layer and leaves the residual path untouched, which keeps
gradients well scaled through depth. Expected outcome at 6 layers with a 500-step warm-up and a
peak learning rate of 3.95e-3: **pre-norm at least as good**, and post-norm, which needs a longer
warm-up at high learning rates, **lower by a few points or unstable** (its curve shows it).

    python experiments/norm_position.py [--steps 2000] [--seeds 0 1]
"""

from common import Variant, parse_arguments, run_experiment

if __name__ == "__main__":
    run_experiment("norm_position", [
        Variant("pre-norm", model={"norm_first": True}),
        Variant("post-norm", model={"norm_first": False}),
    ], parse_arguments(__doc__.splitlines()[0]))
