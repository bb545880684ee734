"""Part 3: the encoder layer (pre-norm and post-norm) and the encoder stack with its final LayerNorm,
checked against frozen float64 reference outputs.

Isolation from Part 2: most cases set the attention's output projection ``w_o`` to 0, so *any*
attention, right or wrong, contributes exactly ``b_o`` at every position and only the layer's own
wiring (norms, residuals, feed-forward, dropout) is judged. The one-position cases keep ``w_o``: with
a single position per sequence every attention that takes a softmax over the keys gives
``W_o (W_v x + b_v) + b_o`` whatever its scaling, masking or head layout, and they show what the
attention reads (``LayerNorm(x)`` in a pre-norm layer, ``x`` in a post-norm one).
"""

from __future__ import annotations

import torch

from . import adapters
from .report import Item, Report, compare, describe_mismatch
from .snapshots import bugs_of, load_snapshot

PART = "encoder"
TITLE = "Part 3: encoder layer"
POINTS = 20
# LayerNorm, GELU and matmuls in float64, summed in any order, agree to ~1e-14; every bug below
# moves some output by > 1 (measured when the snapshot was made: 1.3 at least).
ATOL, RTOL, REASON = 1e-9, 1e-7, "float64 in any summation order agrees to ~1e-14; the bugs move outputs by > 1"
# The same layer run twice on the same input is deterministic; dropout at p = 0.5 changes values by O(1).
REPEAT_ATOL, REPEAT_RTOL, REPEAT_REASON = 1e-12, 0.0, ("a layer without randomness gives the same float64 "
                                                       "output twice; dropout 0.5 changes values by O(1)")
DROPOUT = 0.5                    # the dropout probability of the eval-mode case (eval must ignore it)
DROPOUT_SEED = 0                 # the global RNG seed of that case, so that a bug there is reproducible

CAUSES = {
    "post_norm_when_pre_norm_asked": "the other norm placement: asked for pre-norm (norm_first=True: "
                                     "x = x + Sublayer(LayerNorm(x))), the layer computed post-norm "
                                     "(x = LayerNorm(x + Sublayer(x)))",
    "pre_norm_when_post_norm_asked": "the other norm placement: asked for post-norm (norm_first=False: "
                                     "x = LayerNorm(x + Sublayer(x))), the layer computed pre-norm "
                                     "(x = x + Sublayer(LayerNorm(x)))",
    "missing_attention_residual": "missing residual around the attention sub-layer: the attention's output "
                                  "replaces x instead of being added to it (x + Attention(...))",
    "missing_feed_forward_residual": "missing residual around the feed-forward sub-layer: the feed-forward's "
                                     "output replaces x instead of being added to it (x + FFN(...))",
    "missing_final_norm": "missing final LayerNorm: a pre-norm Encoder must apply final_norm after its last "
                          "layer, because a pre-norm residual stream is never normalised otherwise",
    "dropout_active_in_eval": "dropout active in eval mode: the layer drops values although it is in eval "
                              "mode (call the Dropout modules, which follow self.training, rather than a "
                              "dropout that is always on)",
}

ATTENTION_HINT = ("; this case runs your attention with one position per sequence, where any softmax over "
                  "the keys gives W_o (W_v x + b_v) + b_o: if Part 2 fails, fix it first")


def layer_weights(snapshot: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The weights stored under ``weights/<prefix>/`` as ``run_encoder_layer`` takes them."""
    start = f"weights/{prefix}/"
    return {name[len(start):]: t.clone() for name, t in snapshot.items() if name.startswith(start)}


def run_cases(snapshot: dict[str, torch.Tensor], run_encoder_layer, run_encoder) -> dict[str, torch.Tensor]:
    """Every case's output, keyed as in the snapshot (``<case>/output``). Used by the check and,
    on the reference, by ``make_snapshots``, so that both make exactly the same calls. Runs in a
    fork of the global RNG (building layers draws their initial weights), so a check leaves the
    caller's random stream as it was."""
    with torch.random.fork_rng(devices=[]):
        return _run_cases(snapshot, run_encoder_layer, run_encoder)


def _run_cases(snapshot, run_encoder_layer, run_encoder):
    num_heads, d_ff = int(snapshot["num_heads"]), int(snapshot["d_ff"])

    def isolated():                          # w_o = 0: any attention contributes b_o only
        return layer_weights(snapshot, "isolated")

    def one_position():                      # w_o kept: with seq = 1 every softmax over the keys is 1
        return layer_weights(snapshot, "one_position")

    mask = snapshot["post_norm/key_padding_mask"].bool()

    def x(case):
        return snapshot[f"{case}/x"].clone()

    outputs = {
        "pre_norm/output": run_encoder_layer(isolated(), x("pre_norm"), num_heads, d_ff, True),
        "post_norm/output": run_encoder_layer(isolated(), x("post_norm"), num_heads, d_ff, False,
                                              key_padding_mask=mask.clone()),
        "pre_norm_one_position/output": run_encoder_layer(one_position(), x("pre_norm_one_position"),
                                                          num_heads, d_ff, True),
        "post_norm_one_position/output": run_encoder_layer(one_position(), x("post_norm_one_position"),
                                                           num_heads, d_ff, False),
        "stack/output": run_encoder([layer_weights(snapshot, f"stack/layer{i}")
                                     for i in range(int(snapshot["stack/num_layers"]))],
                                    layer_weights(snapshot, "stack/final_norm"), x("stack"), num_heads, d_ff,
                                    True),
    }
    # The dropout case: the pre-norm case again, built with dropout 0.5 and run twice in eval mode;
    # seeded, so that what a bug draws here is reproducible.
    torch.manual_seed(DROPOUT_SEED)
    for key in ("dropout/output", "dropout/second_output"):
        outputs[key] = run_encoder_layer(isolated(), x("pre_norm"), num_heads, d_ff, True, dropout=DROPOUT)
    return outputs


def check_encoder(run_encoder_layer=None, run_encoder=None) -> Report:
    """``run_encoder_layer`` and ``run_encoder`` (default: ``adapters.run_encoder_layer`` and
    ``adapters.run_encoder``) compute your layer and your stack; pass your own functions with the
    same signatures to check an implementation that lives elsewhere (a notebook)."""
    run_encoder_layer = run_encoder_layer or adapters.run_encoder_layer
    run_encoder = run_encoder or adapters.run_encoder
    report = Report(PART, TITLE, POINTS)
    snapshot = load_snapshot(PART)
    num_heads = int(snapshot["num_heads"])
    got = run_cases(snapshot, run_encoder_layer, run_encoder)

    def graded(name, key, hint=""):
        item = compare(name, got[key], snapshot[f"expected/{key}"], ATOL, RTOL, REASON,
                       bugs_of(snapshot, key, CAUSES))
        if hint and not item.passed and item.cause.startswith("no known bug"):
            item.cause += hint
        return report.add(item)

    def shape(case):
        return list(snapshot[f"{case}/x"].shape)

    padding = int(snapshot["post_norm/key_padding_mask"].sum())
    graded(f"pre-norm layer (norm_first=True) {shape('pre_norm')}, {num_heads} heads, w_o = 0", "pre_norm/output")
    graded(f"post-norm layer (norm_first=False) {shape('post_norm')}, {num_heads} heads, w_o = 0, "
           f"{padding} padding keys", "post_norm/output")
    graded(f"pre-norm layer, one position per sequence {shape('pre_norm_one_position')}: the attention reads "
           f"LayerNorm(x)", "pre_norm_one_position/output", ATTENTION_HINT)
    graded(f"post-norm layer, one position per sequence {shape('post_norm_one_position')}: the attention "
           f"reads x", "post_norm_one_position/output", ATTENTION_HINT)
    graded(f"pre-norm Encoder of {int(snapshot['stack/num_layers'])} layers and its final LayerNorm "
           f"{shape('stack')}, w_o = 0", "stack/output")

    # Dropout in eval mode. A bug's frozen output here is one random draw, useless for matching a
    # student's; what shows the bug is that two runs of the same layer differ.
    first, second = got["dropout/output"], got["dropout/second_output"]
    repeat_name = f"dropout {DROPOUT} in eval mode: a second run gives the same output"
    repeat_tolerance = f"atol {REPEAT_ATOL:g}, rtol {REPEAT_RTOL:g}: {REPEAT_REASON}"
    comparable = (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)
                  and first.shape == second.shape)
    random = comparable and not torch.allclose(second.detach().double(), first.detach().double(),
                                               rtol=REPEAT_RTOL, atol=REPEAT_ATOL)
    known = {bug: found for bug, found in bugs_of(snapshot, "dropout/output", CAUSES).items()
             if bug != "dropout_active_in_eval"}
    item = compare(f"layer built with dropout {DROPOUT}, eval mode: output equals the dropout-free pre-norm "
                   f"output", first, snapshot["expected/dropout/output"], ATOL, RTOL, REASON, known)
    if random and not item.passed:
        item.cause = CAUSES["dropout_active_in_eval"]
    report.add(item)
    if not comparable:
        report.add(Item(repeat_name, False, f"the two runs returned {type(first).__name__} "
                        f"{list(getattr(first, 'shape', []))} and {type(second).__name__} "
                        f"{list(getattr(second, 'shape', []))}", tolerance=repeat_tolerance))
    elif random:
        report.add(Item(repeat_name, False, "the two runs differ: " + describe_mismatch(second, first, REPEAT_ATOL,
                                                                                       REPEAT_RTOL),
                        CAUSES["dropout_active_in_eval"], repeat_tolerance))
    else:
        report.add(Item(repeat_name, True, tolerance=repeat_tolerance))
    return report
