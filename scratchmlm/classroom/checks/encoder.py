"""Part 3: the encoder layer (pre-norm and post-norm) and the encoder stack with its final LayerNorm,
checked against frozen float64 reference outputs.

Isolation from Part 2: most cases set the attention's output projection ``w_o`` to 0, so *any*
attention, right or wrong, contributes exactly ``b_o`` at every position and only the layer's own
wiring (norms, residuals, feed-forward, dropout) is judged. The one-position cases keep ``w_o``: with
a single position per sequence every attention that takes a softmax over the keys gives
``W_o (W_v x + b_v) + b_o`` whatever its scaling, masking or head layout, and they show what the
attention reads (``LayerNorm(x)`` in a pre-norm layer, ``x`` in a post-norm one).

Then properties on fresh random weights with a *live* attention (``w_o`` not 0), through one layer
(both placements) and through a two-layer stack: eval mode ignores the dropout the modules were built
with, real positions do not see padding, and every parameter of a layer gets its gradient. These items
need a working attention too: when your attention fails the same property on its own (Part 2), they
say so instead of blaming the layer.
"""

from __future__ import annotations

import torch

from . import adapters
from . import attention as attention_check
from .guard import Failed, call
from .properties import (FD_TOLERANCE, NO_MODULE, NOT_IN_GRADE, NOT_PROMISED, TOLERANCE, FunctionModule, accepts, clones, generator, gradient_problems, item_from,
                         layer_weights as fresh_layer_weights, not_a_tensor, padding_mask, randn, same)
from .report import Item, Report, compare, describe_mismatch, grading, name_one_bug
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
    "stack_dropout_in_eval": "the Encoder stack drops values in eval mode: a dropout between (or around) the "
                             "layers that is always on; use Dropout modules, which follow self.training",
    "mask_not_passed_to_attention": "the layer does not pass key_padding_mask on to its attention as it came "
                                    "(dropped, or changed): real positions attend to padding (call "
                                    "self.attention(..., key_padding_mask))",
    "mask_not_passed_down_the_stack": "the Encoder passes key_padding_mask to its first layer only: every layer "
                                      "must get it, or later layers attend to padding",
    "attention_cut_from_graph": "the layer cuts the attention's output from autograd's graph (.detach(), "
                                ".data or torch.no_grad()): the output is right, but the attention's weights "
                                "get no gradient and never learn",
}
ATTENTION_FIRST = ("your attention fails this property on its own (Part 2's checks): fix Part 2 first; this "
                   "item uses a live attention inside the layer")
PROPERTY_HINTS = {
    "layer_dropout": "an encoder layer in eval mode does not give its dropout-free output: every dropout "
                     "must follow self.training",
    "stack_dropout": CAUSES["stack_dropout_in_eval"],
    "layer_padding": "a layer's output at real positions depends on the padding positions' inputs, although "
                     "the attention alone does not: check what the layer passes to its attention",
    "stack_padding": "the stack's output at real positions depends on the padding positions' inputs, although "
                     "each layer alone does not: check what the Encoder passes to its layers",
    "gradients": "some parameter of the layer gets no gradient, or a wrong one: no .detach(), .data or "
                 "torch.no_grad() between the parameters and the output",
}
FRESH_BATCH, FRESH_SEQ, FRESH_D_MODEL, FRESH_HEADS, FRESH_D_FF, FRESH_LAYERS = 3, 6, 16, 4, 32, 2
PLANNED_ITEMS = 12

GENERIC_LINE = "no known bug"
# Where to look, per frozen case, when no catalogued bug explains a wrong output.
CASE_HINTS = {
    "pre_norm/output": "with w_o = 0 the attention adds only b_o, so the pre-norm layer's own wiring is wrong: "
                       "x = x + Attention(norm1(x)), then x = x + W_2 GELU(W_1 norm2(x) + b_1) + b_2 (check the "
                       "norms, the residuals and the feed-forward's activation)",
    "post_norm/output": "with w_o = 0 the attention adds only b_o, so the post-norm layer's own wiring is wrong: "
                        "x = norm1(x + Attention(x)), then x = norm2(x + W_2 GELU(W_1 x + b_1) + b_2) (check the "
                        "norms, the residuals and the feed-forward's activation)",
    "pre_norm_one_position/output": "check what the pre-norm layer feeds its attention and feed-forward",
    "post_norm_one_position/output": "check what the post-norm layer feeds its attention and feed-forward",
    "stack/output": "the Encoder runs its layers in order, each on the previous one's output, then final_norm "
                    "once after the last (pre-norm); check Encoder.forward",
    "dropout/output": "the layer built with dropout 0.5, in eval mode, must give exactly the dropout-free output",
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
        "pre_norm/output": call(run_encoder_layer, isolated(), x("pre_norm"), num_heads, d_ff, True),
        "post_norm/output": call(run_encoder_layer, isolated(), x("post_norm"), num_heads, d_ff, False,
                                 key_padding_mask=mask.clone()),
        "pre_norm_one_position/output": call(run_encoder_layer, one_position(), x("pre_norm_one_position"),
                                             num_heads, d_ff, True),
        "post_norm_one_position/output": call(run_encoder_layer, one_position(), x("post_norm_one_position"),
                                              num_heads, d_ff, False),
        "stack/output": call(run_encoder, [layer_weights(snapshot, f"stack/layer{i}")
                                           for i in range(int(snapshot["stack/num_layers"]))],
                             layer_weights(snapshot, "stack/final_norm"), x("stack"), num_heads, d_ff, True),
    }
    # The dropout case: the pre-norm case again, built with dropout 0.5 and run twice in eval mode;
    # seeded, so that what a bug draws here is reproducible.
    torch.manual_seed(DROPOUT_SEED)
    for key in ("dropout/output", "dropout/second_output"):
        outputs[key] = call(run_encoder_layer, isolated(), x("pre_norm"), num_heads, d_ff, True, dropout=DROPOUT)
    return outputs


def check_encoder(run_encoder_layer=None, run_encoder=None, make_encoder_layer=None,
                  seed: int | None = None) -> Report:
    """``run_encoder_layer``, ``run_encoder`` and ``make_encoder_layer`` (default: the ``adapters``
    functions of those names) reach your layer and your stack; pass your own functions with the same
    signatures to check an implementation that lives elsewhere (a notebook). ``seed`` draws the fresh
    inputs of the property items (default: a fixed seed, so the report is the same on every run)."""
    if run_encoder_layer is not None and make_encoder_layer is None:   # a notebook's function: its own gradients
        def make_encoder_layer(weights, num_heads, d_ff, norm_first, dropout=0.0):
            return FunctionModule(run_encoder_layer, weights, num_heads, d_ff, norm_first)
    run_encoder_layer = run_encoder_layer or adapters.run_encoder_layer
    run_encoder = run_encoder or adapters.run_encoder
    make_encoder_layer = make_encoder_layer or adapters.make_encoder_layer
    report = Report(PART, TITLE, POINTS)
    with grading(report, PLANNED_ITEMS), torch.random.fork_rng(devices=[]):
        torch.manual_seed(DROPOUT_SEED)
        _check_snapshots(report, run_encoder_layer, run_encoder)
        _check_properties(report, run_encoder_layer, run_encoder, make_encoder_layer, seed)
    name_one_bug(report, CAUSES)
    return report


def _check_snapshots(report: Report, run_encoder_layer, run_encoder) -> None:
    snapshot = load_snapshot(PART)
    num_heads = int(snapshot["num_heads"])
    got = run_cases(snapshot, run_encoder_layer, run_encoder)

    def graded(name, key, hint=""):
        item = compare(name, got[key], snapshot[f"expected/{key}"], ATOL, RTOL, REASON,
                       bugs_of(snapshot, key, CAUSES))
        if not item.passed and item.cause.startswith(GENERIC_LINE):
            item.cause = "not a catalogued bug: " + CASE_HINTS[key] + hint
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
    if not item.passed and item.cause.startswith(GENERIC_LINE):
        item.cause = "not a catalogued bug: " + CASE_HINTS["dropout/output"]
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


def _attention_fails(seed) -> set[str]:
    """The Part 2 properties your attention fails on its own (through ``adapters``), by name."""
    scratch = Report(attention_check.PART, attention_check.TITLE, attention_check.POINTS)
    try:
        attention_check._check_properties(scratch, adapters.run_attention, adapters.make_attention, seed)
    except NotImplementedError:
        raise
    except Exception:                          # noqa: BLE001  (a crash there is graded in Part 2)
        return {"dropout", "padding", "gradients"}
    keys = ("dropout", "padding", "rows", "weights", "gradients")
    return {key for key, item in zip(keys, scratch.items) if not item.passed}


def _check_properties(report: Report, run_encoder_layer, run_encoder, make_encoder_layer, seed) -> None:
    rng = generator(seed)
    batch, seq, d_model, heads, d_ff = FRESH_BATCH, FRESH_SEQ, FRESH_D_MODEL, FRESH_HEADS, FRESH_D_FF
    weights = fresh_layer_weights(rng, d_model, d_ff)
    stack = [fresh_layer_weights(rng, d_model, d_ff) for _ in range(FRESH_LAYERS)]
    final_norm = {"weight": 1.0 + randn(rng, d_model, scale=0.3), "bias": randn(rng, d_model, scale=0.2)}
    x = randn(rng, batch, seq, d_model)
    mask = padding_mask(batch, seq, rng)
    x_other = torch.where(mask[..., None], randn(rng, batch, seq, d_model, scale=3.0), x)
    shape = [batch, seq, d_model]
    setting = f"fresh random weights with a live attention, x {shape}, {heads} heads, {int(mask.sum())} padding keys"

    def layer(norm_first, inputs, dropout=0.0):
        return call(run_encoder_layer, clones(weights), inputs.clone(), heads, d_ff, norm_first, dropout=dropout,
                    key_padding_mask=mask.clone())

    def encoder(inputs, dropout=0.0):
        return call(run_encoder, [clones(w) for w in stack], clones(final_norm), inputs.clone(), heads, d_ff,
                    True, key_padding_mask=mask.clone(), **({"dropout": dropout} if dropout else {}))

    failed, names = {}, {}
    problems = []
    for norm_first in (True, False):
        reference = layer(norm_first, x)
        kind = "pre-norm" if norm_first else "post-norm"
        problem = not_a_tensor(reference, shape)
        if not problem:
            for attempt in (1, 2):
                problem = same(layer(norm_first, x, DROPOUT), reference)
                if problem:
                    problem = f"{kind} layer, run {attempt} with dropout {DROPOUT}: {problem}"
                    break
        if problem:
            problems.append(problem if problem.startswith(kind) else f"{kind} layer: {problem}")
    failed["layer_dropout"] = "\n".join(problems)
    names["layer_dropout"] = (f"eval mode: a layer (pre- and post-norm) built with dropout {DROPOUT} gives its "
                              f"dropout-0 output ({setting})")
    reference = encoder(x)
    problem = not_a_tensor(reference, shape)
    stack_dropout_promised = accepts(run_encoder, "dropout")
    if not problem and stack_dropout_promised:
        for attempt in (1, 2):
            problem = same(encoder(x, DROPOUT), reference)
            if problem:
                problem = f"run {attempt} with dropout {DROPOUT}: {problem}"
                break
    failed["stack_dropout"] = problem
    names["stack_dropout"] = (f"eval mode: a {FRESH_LAYERS}-layer Encoder built with dropout {DROPOUT} gives its "
                              f"dropout-0 output ({setting})")
    if not stack_dropout_promised:
        failed["stack_dropout"], names["stack_dropout"] = "", NOT_PROMISED.format(argument="dropout")
    problems = []
    for norm_first in (True, False):
        kind = "pre-norm" if norm_first else "post-norm"
        reference_layer = layer(norm_first, x)
        problem = not_a_tensor(reference_layer, shape) or same(layer(norm_first, x_other), reference_layer, ~mask)
        if problem:
            problems.append(f"{kind} layer, at real positions after new values at the padding positions: {problem}")
    failed["layer_padding"] = "\n".join(problems)
    names["layer_padding"] = (f"padding: a layer's outputs at real positions do not change when the padding "
                              f"positions' x changes ({setting})")
    problem = not_a_tensor(reference, shape) or same(encoder(x_other), reference, ~mask)
    failed["stack_padding"] = (f"at real positions after new values at the padding positions: {problem}"
                               if problem else "")
    names["stack_padding"] = (f"padding: a {FRESH_LAYERS}-layer Encoder's outputs at real positions do not change "
                              f"when the padding positions' x changes ({setting})")
    # cut: the parameters whose gradient is wrong; the attention's, and in a pre-norm layer the LayerNorm
    # before it, when the attention's output is cut from the graph
    problems, cut = [], []
    for norm_first in ((True, False) if make_encoder_layer is not NO_MODULE else ()):
        module = call(make_encoder_layer, clones(weights), heads, d_ff, norm_first)
        kind = "pre-norm" if norm_first else "post-norm"
        if not isinstance(module, torch.nn.Module):
            problems.append(f"{kind}: make_encoder_layer: " + (not_a_tensor(module, []) if isinstance(module, Failed)
                                                              else f"expected a module, got {type(module).__name__}"))
            continue
        found = call(gradient_problems, module, lambda: module(x, mask), rng)
        if isinstance(found, Failed):
            problems.append(f"{kind}: " + not_a_tensor(found, []))
        else:
            problems += [f"{kind} layer, {line}" for line in found]
            cut += [line.split()[1] for line in found if line.startswith("parameter ")]
    failed["gradients"] = "\n".join(problems)
    names["gradients"] = (f"every parameter's gradient (autograd) in a pre- and a post-norm layer agrees with a "
                          f"finite difference ({setting}, layer.train())")
    if make_encoder_layer is NO_MODULE:
        names["gradients"] = NOT_IN_GRADE

    broken = {key for key, problem in failed.items() if problem}
    attention_broken = _attention_fails(seed) if broken else set()
    causes = {}
    for key in broken:
        needs = {"layer_dropout": "dropout", "stack_dropout": "dropout", "layer_padding": "padding",
                 "stack_padding": "padding", "gradients": "gradients"}[key]
        if needs in attention_broken or (key == "gradients" and attention_broken & {"dropout", "padding"}):
            causes[key] = ATTENTION_FIRST
        elif key == "layer_dropout" and "stack_dropout" in broken:
            causes[key] = PROPERTY_HINTS[key]
        elif key == "layer_padding":
            causes[key] = CAUSES["mask_not_passed_to_attention"]
        elif key == "stack_padding":
            causes[key] = (CAUSES["mask_not_passed_to_attention"] if "layer_padding" in broken
                           else CAUSES["mask_not_passed_down_the_stack"])
        elif key == "stack_dropout":
            causes[key] = (PROPERTY_HINTS["layer_dropout"] if "layer_dropout" in broken
                           else CAUSES["stack_dropout_in_eval"])
        elif key == "gradients":
            causes[key] = (CAUSES["attention_cut_from_graph"]
                           if cut and len(cut) == len(problems) and all("attention" in name or "norm1" in name for name in cut)
                           else PROPERTY_HINTS[key])
        else:
            causes[key] = PROPERTY_HINTS[key]
    for key in ("layer_dropout", "stack_dropout", "layer_padding", "stack_padding", "gradients"):
        weight = 0.0 if names[key].startswith("not checked") else 1.0       # worth nothing when not promised
        report.add(item_from(names[key], failed[key], causes.get(key, ""),
                             FD_TOLERANCE if key == "gradients" else TOLERANCE, weight))
