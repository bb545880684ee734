"""Part 2: multi-head self-attention, checked against frozen float64 reference outputs, then by its
properties on fresh random inputs (see ``properties.py``): eval mode ignores dropout, real positions
ignore what stands at padding positions, each batch row is computed on its own, the attention
weights returned with ``return_weights`` are a distribution over the real keys that gives the output,
and every parameter gets its gradient."""

from __future__ import annotations

import torch

from . import adapters
from .guard import call
from .properties import (FD_TOLERANCE, NO_MODULE, NOT_IN_GRADE, NOT_PROMISED, TOLERANCE, FunctionModule, accepts, attention_weights, clones, generator, gradient_problems, item_from,
                         not_a_tensor, padding_mask, randn, same)
from .report import Report, compare, grading, name_one_bug
from .snapshots import bugs_of, load_snapshot

PART = "attention"
TITLE = "Part 2: multi-head self-attention"
POINTS = 25
# float64 sums taken in another order differ by ~1e-15; every bug below moves the output by > 1e-3.
ATOL, RTOL, REASON = 1e-9, 1e-7, "float64 in any summation order agrees to ~1e-15; the bugs differ by > 1e-3"

CAUSES = {
    "softmax_over_queries": "softmax taken over the queries (dim=-2) instead of over the keys (dim=-1): "
                            "each key's weights sum to 1 instead of each query's",
    "mask_after_softmax": "padding masked after the softmax: the weights of padding keys are zeroed but the "
                          "row is not renormalised, so it no longer sums to 1",
    "mask_filled_with_zero": "padding scores filled with 0 instead of -inf: exp(0) = 1 still gives padding "
                             "keys weight",
    "mask_not_applied": "key_padding_mask ignored: queries attend to padding keys",
    "no_scaling": "scores not divided by sqrt(d_k): the softmax saturates as d_k grows",
    "scaled_by_d_k": "scores divided by d_k instead of sqrt(d_k)",
    "scaled_by_sqrt_d_model": "scores divided by sqrt(d_model) instead of sqrt(d_k) (d_k = d_model / heads)",
    "heads_merged_without_transpose": "heads merged by reshaping [batch, heads, seq, d_k] straight to "
                                      "[batch, seq, d_model] without transposing heads and seq first",
    "causal_mask": "a causal mask added by mistake: a masked LM must see the context on both sides",
    "mask_on_queries": "the padding mask is applied to the queries (rows of the scores) instead of the keys "
                       "(columns): key_padding_mask[:, None, None, :] masks the keys, so that no query "
                       "attends to padding",
    "dropout_in_eval": "dropout on the attention weights is active in eval mode: use the module's Dropout "
                       "(which follows self.training), or F.dropout(weights, p, training=self.training)",
    "weights_returned_before_masking": "the attention weights returned with return_weights are not the ones "
                                       "that made the output: they were taken before the padding mask "
                                       "(return the softmax of the masked scores)",
    "projection_cut_from_graph": "part of the attention is cut from autograd's graph (.detach(), .data or "
                                 "torch.no_grad()): the output is right, but some projection (W_q, W_k, W_v "
                                 "or W_o) gets no gradient, or a wrong one, so it never learns",
}
# Words for a property no catalogued bug explains: which property, and where to look.
PROPERTY_HINTS = {
    "dropout": "eval mode does not give the dropout-free output: dropout must follow self.training",
    "padding": "the output at real positions depends on what stands at padding positions: padding keys "
               "must get weight 0 (fill their scores with -inf or the most negative float before the softmax)",
    "rows": "a batch row's output depends on the other rows: check the view/reshape/transpose that split "
            "and merge the heads ([batch, seq, heads, d_k] -> [batch, heads, seq, d_k] and back)",
    "weights": "the weights returned with return_weights are not the softmax over the keys that gives "
               "the output (shape [batch, heads, seq, seq], each row sums to 1, 0 at padding keys)",
    "gradients": "some parameter's gradient is missing or wrong: no .detach(), .data, torch.no_grad() or "
                 "in-place change of a tensor autograd needs between the parameters and the output",
}
SEED_BATCH, SEED_SEQ, SEED_D_MODEL, SEED_HEADS = 3, 7, 24, 3     # d_k = 8
DROPOUT = 0.5
PLANNED_ITEMS = 7                # 2 snapshot cases, 5 properties


CASES = ("plain", "padding")


def check_attention(run_attention=None, make_attention=None, seed: int | None = None) -> Report:
    """``run_attention`` and ``make_attention`` (default: ``adapters.run_attention`` and
    ``adapters.make_attention``) reach your attention; pass your own functions with the same signatures
    to check an implementation that lives elsewhere (a notebook). ``seed`` draws the fresh inputs of
    the property items (default: a fixed seed, so the report is the same on every run)."""
    if run_attention is not None and make_attention is None:      # a notebook's function: its own gradients
        def make_attention(weights, num_heads, dropout=0.0):
            return FunctionModule(run_attention, weights, num_heads)
    run_attention = run_attention or adapters.run_attention
    make_attention = make_attention or adapters.make_attention
    report = Report(PART, TITLE, POINTS)
    with grading(report, PLANNED_ITEMS), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _check_snapshots(report, run_attention)
        _check_properties(report, run_attention, make_attention, seed)
    name_one_bug(report, CAUSES)
    return report


def _check_snapshots(report: Report, run_attention) -> None:
    snapshot = load_snapshot("attention")
    weights = {name.split("/", 1)[1]: t for name, t in snapshot.items() if name.startswith("weights/")}
    num_heads = int(snapshot["num_heads"])
    for case in CASES:
        x = snapshot[f"{case}/x"]
        mask = snapshot.get(f"{case}/key_padding_mask")
        mask = None if mask is None else mask.bool()
        got = call(run_attention, clones(weights), x.clone(), num_heads, None if mask is None else mask.clone())
        what = "no padding" if mask is None else f"{int(mask.sum())} padding keys"
        item = report.add(compare(f"output {list(x.shape)}, {num_heads} heads, {what}", got,
                                  snapshot[f"expected/{case}/output"], ATOL, RTOL, REASON,
                                  bugs_of(snapshot, f"{case}/output", CAUSES)))
        if not item.passed and item.cause.startswith("no known bug"):
            item.cause = ("not a catalogued bug; if the property items below hold, check the projections "
                          "(W_q for the queries, W_k the keys, W_v the values), the split into heads, the scaling "
                          "by sqrt(d_k), and W_o with its bias b_o")


def _diagnose(failed: dict[str, str]) -> dict[str, str]:
    """The words for each failed property: a catalogued bug when the pattern of failures is its, else
    the property's own hint."""
    names = set(failed)
    if names == {"dropout"}:
        return {"dropout": CAUSES["dropout_in_eval"]}
    if names == {"gradients"}:
        return {"gradients": CAUSES["projection_cut_from_graph"]}
    if names == {"weights"} and "at padding keys" in failed["weights"]:
        return {"weights": CAUSES["weights_returned_before_masking"]}
    return {name: PROPERTY_HINTS[name] for name in names}


def _check_properties(report: Report, run_attention, make_attention, seed) -> None:
    rng = generator(seed)
    batch, seq, d_model, heads = SEED_BATCH, SEED_SEQ, SEED_D_MODEL, SEED_HEADS
    weights = attention_weights(rng, d_model)
    x = randn(rng, batch, seq, d_model)
    mask = padding_mask(batch, seq, rng)
    real = ~mask
    shape = [batch, seq, d_model]
    setting = f"fresh random weights and x {shape}, {heads} heads, {int(mask.sum())} padding keys"
    failed, names = {}, {}

    def run(*args, **kwargs):
        return call(run_attention, clones(weights), *args, **kwargs)

    reference = run(x.clone(), heads, mask.clone())
    base = not_a_tensor(reference, shape)
    # 1. eval mode ignores the dropout the module was built with
    problem = base
    if not accepts(run_attention, "dropout"):
        problem = ""
        names["dropout"] = NOT_PROMISED.format(argument="dropout")
    elif not problem:
        for attempt in range(2):
            problem = same(run(x.clone(), heads, mask.clone(), dropout=DROPOUT), reference)
            if problem:
                problem = f"run {attempt + 1} with dropout {DROPOUT}: " + problem
                break
    failed["dropout"] = problem
    names["dropout"] = names.get("dropout", "") or f"eval mode ignores dropout: built with dropout {DROPOUT}, the output equals dropout 0's ({setting})"
    # 2. real positions do not see padding
    x_other = torch.where(mask[..., None], randn(rng, batch, seq, d_model, scale=3.0), x)
    problem = base or same(run(x_other, heads, mask.clone()), reference, real)
    failed["padding"] = ("at real positions, after new values at the padding positions: " + problem) if problem else ""
    names["padding"] = f"outputs at real positions do not change when the padding positions' x changes ({setting})"
    # 3. each batch row on its own
    row = 1
    alone = run(x[row:row + 1].clone(), heads, mask[row:row + 1].clone())
    problem = base or not_a_tensor(alone, [1, seq, d_model]) or same(alone[0], reference[row])
    failed["rows"] = (f"row {row} run alone vs within the batch: " + problem) if problem else ""
    names["rows"] = f"a batch row's output is the same run alone ({setting})"
    # 4. return_weights
    promised = accepts(run_attention, "return_weights")
    failed["weights"] = _weights_problems(run(x.clone(), heads, mask.clone(), return_weights=True), reference,
                                          weights, x, mask, heads) if promised else ""
    names["weights"] = NOT_PROMISED.format(argument="return_weights") if not promised else (
        f"return_weights: the output, and weights [batch, heads, seq, seq] whose rows sum to 1, are 0 at padding "
        f"keys and give the output ({setting})")
    # 5. gradients reach every parameter
    if make_attention is NO_MODULE:
        failed["gradients"], names["gradients"] = "", NOT_IN_GRADE
    else:
        module = call(make_attention, clones(weights), heads)
        problems = module if not isinstance(module, torch.nn.Module) else call(
            gradient_problems, module, lambda: module(x, mask), rng)
        failed["gradients"] = problems if isinstance(problems, str) else (
            not_a_tensor(problems, []) if not isinstance(problems, list) else "\n".join(problems))
        names["gradients"] = (f"every parameter's gradient (autograd) agrees with a finite difference ({setting}, "
                              f"module.train())")

    causes = _diagnose({name: problem for name, problem in failed.items() if problem})
    for key in ("dropout", "padding", "rows", "weights", "gradients"):
        weight = 0.0 if names[key].startswith("not checked") else 1.0       # worth nothing when not promised
        report.add(item_from(names[key], failed[key], causes.get(key, ""),
                             FD_TOLERANCE if key == "gradients" else TOLERANCE, weight))


def _weights_problems(result, reference, weights, x, mask, heads) -> str:
    if not isinstance(result, tuple) or len(result) != 2:
        return not_a_tensor(result, []) if not isinstance(result, tuple) else (
            f"expected (output, weights), got a tuple of {len(result)}")
    output, attention = result
    batch, seq, d_model = x.shape
    problem = not_a_tensor(reference, x.shape) or same(output, reference)
    if problem:
        return "the output with return_weights=True differs from the output without: " + problem
    problem = not_a_tensor(attention, [batch, heads, seq, seq])
    if problem:
        return "the weights: " + problem
    attention = attention.detach().double()
    sums = attention.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-9, rtol=0):
        bad = (sums - 1).abs() > 1e-9
        at = [int(i) for i in bad.nonzero()[0]]
        return f"{int(bad.sum())} of {sums.numel()} rows do not sum to 1; first at {at}: {float(sums[tuple(at)]):.6g}"
    on_padding = attention.masked_select(mask[:, None, None, :].expand_as(attention))
    if on_padding.numel() and float(on_padding.abs().max()) > 1e-12:
        return (f"{int((on_padding.abs() > 1e-12).sum())} weights at padding keys are not 0 (largest "
                f"{float(on_padding.abs().max()):.3g}): the weights must be 0 at padding keys")
    v = (x @ weights["w_v"].T + weights["b_v"]).unflatten(-1, (heads, -1)).transpose(1, 2)
    merged = (attention @ v).transpose(1, 2).reshape(batch, seq, d_model)
    implied = merged @ weights["w_o"].T + weights["b_o"]
    problem = same(output, implied)
    return ("the output is not concat(weights V) W_o + b_o with the returned weights: " + problem) if problem else ""

