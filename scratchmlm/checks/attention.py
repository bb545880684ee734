"""Part 2: multi-head self-attention, checked against frozen float64 reference outputs."""

from __future__ import annotations

from . import adapters
from .report import Report, compare
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
}

CASES = ("plain", "padding")


def check_attention(run_attention=None) -> Report:
    """``run_attention`` (default: ``adapters.run_attention``) computes your attention; pass your own
    function with the same signature to check an implementation that lives elsewhere (a notebook)."""
    run_attention = run_attention or adapters.run_attention
    report = Report(PART, TITLE, POINTS)
    snapshot = load_snapshot("attention")
    weights = {name.split("/", 1)[1]: t for name, t in snapshot.items() if name.startswith("weights/")}
    num_heads = int(snapshot["num_heads"])
    for case in CASES:
        x = snapshot[f"{case}/x"]
        mask = snapshot.get(f"{case}/key_padding_mask")
        mask = None if mask is None else mask.bool()
        got = run_attention(weights, x.clone(), num_heads, None if mask is None else mask.clone())
        what = "no padding" if mask is None else f"{int(mask.sum())} padding keys"
        report.add(compare(f"output {list(x.shape)}, {num_heads} heads, {what}", got,
                           snapshot[f"expected/{case}/output"], ATOL, RTOL, REASON,
                           bugs_of(snapshot, f"{case}/output", CAUSES)))
    return report
