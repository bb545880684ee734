"""Part 1: BERT masking, checked by its properties on ids built here.

The masker is random, and a correct masker may draw its random numbers in any order, so its output
cannot be compared value by value with a frozen reference. Instead the check masks two million
real-looking ids (a 68-id vocabulary: ``[PAD]`` = 0, ``[MASK]`` = 1, ``[UNK]`` = 2 mixed in, rows
ending in runs of ``[PAD]``) and judges what comes back: shapes and dtypes, that the ids passed in are
left alone, that specials are never selected, the labels, that the reported ``kinds`` agree with what
the model sees, the selection rate and its spread across rows, the 80/10/10 split, the random
replacements, that the probabilities passed in are used, and that all randomness comes from ``rng``.

Every statistical bound is at least 6 standard errors wide, so a correct masker fails it with
probability ~1e-9 (and the check seeds everything, so the reference gives the same report each run),
while each known bug lands far outside. The selection is read from ``kinds`` (``!= NOT_SELECTED``);
the labels and inputs are checked against it. The whole check runs in a fork of torch's global RNG,
seeded, so it leaves the caller's random stream as it was.
"""

from __future__ import annotations

import math

import torch

from . import adapters
from .guard import RAISED, YOUR_LINE, Failed, call, raise_failed
from .report import Item, Report, grading

PART = "masking"
TITLE = "Part 1: BERT masking"
POINTS = 20

NOT_SELECTED, MASKED, RANDOMISED, UNCHANGED = 0, 1, 2, 3       # the values of MaskedBatch.kinds
IGNORE_INDEX = -100

# The vocabulary of the check's ids: the CharTokenizer's three specials, then 65 real characters.
VOCAB_SIZE = 68
PAD_ID, MASK_ID, UNK_ID = 0, 1, 2
SPECIAL_IDS = (PAD_ID, MASK_ID, UNK_ID)
REAL_IDS = tuple(range(3, VOCAB_SIZE))

SELECT_PROB, MASK_PROB, RANDOM_PROB = 0.15, 0.8, 0.1
UNCHANGED_PROB = 1.0 - MASK_PROB - RANDOM_PROB
# The main case: 1024 rows of 2048 ids, ~1.8 million maskable, so ~270,000 selected (see MIN_SELECTED).
BATCH, SEQ = 1024, 2048
# The second case, with other probabilities, so that hard-coded 0.15 / 0.8 / 0.1 shows.
OTHER_PROBS = (0.4, 0.5, 0.3)                                   # select, [MASK], random (unchanged 0.2)
OTHER_BATCH, OTHER_SEQ = 256, 512
# The reproducibility cases.
SMALL_BATCH, SMALL_SEQ = 16, 128
DATA_SEED, MASK_SEED, OTHER_SEED, GLOBAL_SEED = 2024, 7, 8, 1234

SIGMAS = 6.0     # every statistical bound: 6 standard errors, a false alarm has probability ~2e-9

# The 80/10/10 split must tell 0.80 from 0.81 and 0.10 from 0.09 (independent draws give 81/10/9).
# With n selected, one standard error of the [MASK] share is sqrt(0.8 * 0.2 / n) (largest of the
# three); at n = 230,400 that is 0.005 / 6, so +-0.005 (half the gap) is 6 standard errors from both
# the right share and the bug's. The main case selects ~270,000 (> 230,400 by far more than 6 sigma).
SHARE_ATOL = 0.005
MIN_SELECTED = math.ceil((SIGMAS / SHARE_ATOL) ** 2 * MASK_PROB * (1 - MASK_PROB))     # 230,400
SHARE_REASON = (f"+-{SHARE_ATOL}: with >= {MIN_SELECTED:,} selected one standard error of a share is "
                f"<= sqrt(0.8*0.2/{MIN_SELECTED:,}) = {SHARE_ATOL / SIGMAS:.5f}, so the bound is 6 standard "
                f"errors from the right shares and from the 0.81 / 0.09 of independent draws")
EXACT = "exact: this property holds for every draw, whatever the random numbers"

CAUSES = {
    "independent_draws": "the three kinds are not split by one draw: 'random' and 'unchanged' were drawn "
                         "independently of each other, so they overlap and one wins, which gives about "
                         "81/10/9 instead of 80/10/10. Draw one uniform u per selected position: u < 0.8 -> "
                         "[MASK], 0.8 <= u < 0.9 -> random, else unchanged",
    "special_ids_inserted": "special ids inserted as random tokens: the random replacement was drawn from the "
                            "whole vocabulary (e.g. randint(vocab_size)) instead of from replacement_ids, so "
                            "[PAD], [MASK] or [UNK] appear where a real character should",
    "labels_kept_at_unselected": "labels kept at unselected positions: labels must be -100 (ignored by the "
                                 "loss) wherever a position is not selected, e.g. "
                                 "torch.where(selected, ids, -100), not a copy of ids",
    "input_modified_in_place": "the ids passed in were changed in place (e.g. inputs = ids; inputs[...] = "
                               "mask_id): the caller's tensor must stay as it was; build inputs with "
                               "torch.where or on ids.clone()",
    "fixed_count_per_row": "a fixed number selected per row: every row gets (almost) exactly 15% of its "
                           "positions, so the count never varies; each position must be selected "
                           "independently with probability select_prob (rand < select_prob), which makes "
                           "the count per row vary like a binomial",
    "generator_ignored": "the generator rng is ignored: the random numbers come from torch's global RNG "
                         "(torch.rand / torch.randint without generator=rng), so the same rng seed does not "
                         "give the same masking; pass generator=rng to every random call",
    "specials_selected": "special ids selected: [PAD], [MASK] and [UNK] (never_select_ids) must never be "
                         "selected; drop them from the selection, e.g. "
                         "& ~torch.isin(ids, never_select_ids)",
    "replacements_miss_last_id": "random replacements do not cover all real ids: some replacement id is never "
                                 "(or too rarely) drawn, typically an off-by-one in randint's upper bound "
                                 "(randint(n) already excludes n)",
    "labels_are_masked_inputs": "labels hold what the model sees (the masked inputs) instead of the original "
                                "ids: at a selected position the label must be the id before masking",
    "probabilities_hard_coded": "the probabilities are hard-coded (0.15 / 0.8 / 0.1): use the masker's "
                                "select_prob, mask_token_prob and random_token_prob",
    "selection_shared_across_rows": "one selection is shared by every row (drawn once and broadcast over the "
                                    "batch, e.g. torch.rand(seq) < select_prob): each row must get its own "
                                    "draws, torch.rand(ids.shape, generator=rng) < select_prob",
    "selection_depends_on_position": "the chance of being selected depends on the position in the row (e.g. "
                                     "a rate that grows or falls along the row, or only some positions "
                                     "eligible): every maskable position must have the same probability",
}
SELECTION_RULES = ("either", "independent", "fixed_count")

# Words for failures no known bug explains.
GENERIC = {
    "shapes": "inputs, labels and kinds must each have the shape of ids; inputs keep the ids' dtype, labels "
              "are int64 (cross_entropy needs int64) and kinds an integer tensor",
    "in_place": CAUSES["input_modified_in_place"],
    "labels": "labels must be the original id at each selected position and -100 everywhere else",
    "kinds": "kinds must be 0 (not selected), 1 ([MASK]), 2 (random) or 3 (unchanged) at every position, "
             "and agree with inputs: [MASK] shows mask_id, unchanged and unselected positions show the "
             "original id (build kinds from three disjoint masks, not a sum of overlapping flags)",
    "rate": "the selection rate is not select_prob: each maskable position must be selected independently "
            "with probability select_prob (torch.rand(...) < select_prob)",
    "rate_inverted": "about 1 - select_prob of the positions are selected: the comparison is the wrong way "
                     "round (use torch.rand(...) < select_prob)",
    "spread_high": "the number selected varies between rows more than a binomial allows: each position must "
                   "be selected independently with the same probability",
    "shares": "the selected positions are not split 80/10/10 into [MASK] / random / unchanged: draw one "
              "uniform u per selected position: u < mask_token_prob -> [MASK], "
              "u < mask_token_prob + random_token_prob -> random, else unchanged",
    "replacement_ids": "a random replacement is not one of replacement_ids (the real characters)",
    "spread_ids": "random replacements are not drawn uniformly from replacement_ids (e.g. copied from other "
                  "positions of the batch, which follows the text's frequencies)",
    "probabilities": "the masker does not follow the probabilities passed in: selection with select_prob, "
                     "then [MASK] / random / unchanged with mask_token_prob / random_token_prob / the rest",
    "not_reproducible": "the same rng and the same global seed give different outputs: some randomness comes "
                        "from elsewhere (Python's random, NumPy, the clock); use only torch calls with "
                        "generator=rng",
    "rows": "the selections of different rows are not independent of each other: draw every row's random "
            "numbers afresh (torch.rand(ids.shape, generator=rng))",
    "fixed_count_wrong": "the number selected per row is (nearly) fixed, but not round(select_prob * n) of the "
                         "row's n maskable positions (count the maskable positions, not the row length)",
    "rng_unused": "the output does not depend on rng: a generator created and seeded inside the masker, or no "
                  "randomness at all; draw every random number with generator=rng",
}


def make_ids(batch: int, seq: int, generator: torch.Generator) -> torch.Tensor:
    """Real-looking ids ``[batch, seq]`` int64: characters with skewed frequencies, ~1% ``[UNK]``,
    ~0.5% ``[MASK]`` (as in a prompt; never selected), and each row ending in a run of 0 to seq/4
    ``[PAD]``."""
    ranks = torch.arange(len(REAL_IDS), dtype=torch.float64)
    frequencies = 1.0 / (ranks + 3.0)                                    # a Zipf-like alphabet
    draws = torch.multinomial(frequencies, batch * seq, replacement=True, generator=generator)
    ids = (draws + REAL_IDS[0]).view(batch, seq)
    noise = torch.rand(batch, seq, generator=generator)
    ids = torch.where(noise < 0.01, torch.full_like(ids, UNK_ID), ids)
    ids = torch.where((noise >= 0.01) & (noise < 0.015), torch.full_like(ids, MASK_ID), ids)
    pad_lengths = torch.randint(0, seq // 4 + 1, (batch, 1), generator=generator)
    padding = torch.arange(seq) >= seq - pad_lengths
    return ids.masked_fill(padding, PAD_ID)


def _mask(run_masker, ids, seed, probs=(SELECT_PROB, MASK_PROB, RANDOM_PROB)):
    """Your masker's ``MaskedBatch``, or a ``Failed`` when it raised or ran out of time."""
    return call(run_masker, ids, torch.Generator().manual_seed(seed), MASK_ID, list(REAL_IDS), SPECIAL_IDS, *probs)


def _positions(selected_row: torch.Tensor, shown: int = 8) -> str:
    positions = selected_row.nonzero().flatten()[:shown].tolist()
    return f"{positions}..." if int(selected_row.sum()) > shown else str(positions)


def _first(where: torch.Tensor) -> list[int]:
    return [int(i) for i in where.nonzero()[0]]


def _shares(kinds_selected: torch.Tensor) -> tuple[int, list[float]]:
    n = int(kinds_selected.numel())
    return n, [float((kinds_selected == kind).sum()) / max(n, 1) for kind in (MASKED, RANDOMISED, UNCHANGED)]


def _within(shares, expected, tolerances) -> bool:
    return all(abs(s - e) <= t for s, e, t in zip(shares, expected, tolerances))


def _independent_shares(mask_p: float, random_p: float) -> list[float]:
    """The split that independent 'random' and 'unchanged' draws give (random wins an overlap)."""
    keep = 1.0 - mask_p - random_p
    return [(1 - random_p) * (1 - keep), random_p, keep * (1 - random_p)]


def _chi_square_bound(df: int, sigmas: float = SIGMAS) -> float:
    """The chi-square quantile ``sigmas`` standard normal deviations up (Wilson-Hilferty)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + sigmas * math.sqrt(a)) ** 3


PLANNED_ITEMS = 16


def check_masking(run_masker=None, seed: int | None = None, selection: str = "either") -> Report:
    """``run_masker`` (default: ``adapters.run_masker``) masks ids with your masker; pass your own
    function with the same signature to check an implementation that lives elsewhere (a notebook).
    ``seed`` draws fresh ids and rng seeds (default: fixed, so the report is the same on every run);
    ``selection`` is the rule for the count per row: ``"either"``, ``"independent"`` or ``"fixed_count"``."""
    if selection not in SELECTION_RULES:
        raise ValueError(f"selection must be one of {', '.join(SELECTION_RULES)}, not {selection!r}")
    run_masker = run_masker or adapters.run_masker
    seeds = (DATA_SEED, MASK_SEED, GLOBAL_SEED) if seed is None else (int(seed), int(seed) + 1, int(seed) + 2)
    report = Report(PART, TITLE, POINTS)
    with grading(report, PLANNED_ITEMS), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds[2])            # a masker using the global RNG gives the same report each run
        _check(report, run_masker, seeds, selection)
    return report


def _check(report: Report, run_masker, seeds, selection) -> None:
    data_seed, mask_seed, _ = seeds
    data = torch.Generator().manual_seed(data_seed)
    ids = make_ids(BATCH, SEQ, data)
    passed_in = ids.clone()
    batch = _mask(run_masker, passed_in, mask_seed)
    shape = list(ids.shape)
    if isinstance(batch, Failed):
        report.add(Item(f"your masker runs on ids {shape}", False, f"{batch.reason}\n{YOUR_LINE}{batch.where}",
                        RAISED, EXACT, weight=PLANNED_ITEMS))
        return

    # 1. shapes and dtypes: nothing else can be judged without them
    problems = []
    for name, want_dtype in (("inputs", ids.dtype), ("labels", torch.int64), ("kinds", None)):
        t = getattr(batch, name, None)
        if not isinstance(t, torch.Tensor):
            problems.append(f"{name}: expected a tensor, got {type(t).__name__}")
            continue
        if list(t.shape) != shape:
            problems.append(f"{name}: shape expected {shape}, got {list(t.shape)}")
        if want_dtype is not None and t.dtype != want_dtype:
            problems.append(f"{name}: dtype expected {want_dtype}, got {t.dtype}")
        if want_dtype is None and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
            problems.append(f"{name}: dtype expected an integer dtype (e.g. torch.uint8), got {t.dtype}")
    report.add(Item(f"inputs, labels and kinds have the shape of ids {shape}; inputs {ids.dtype}, labels "
                    f"int64, kinds integer", not problems, "\n".join(problems),
                    GENERIC["shapes"] if problems else "", EXACT))
    if problems:
        report.items[-1].weight = PLANNED_ITEMS            # nothing else can be judged: the whole part
        return
    inputs, labels, kinds = batch.inputs.cpu(), batch.labels.cpu(), batch.kinds.cpu().long()

    # 2. the ids passed in are left alone
    changed = passed_in.cpu() != ids
    detail = ""
    if bool(changed.any()):
        at = _first(changed)
        detail = (f"{int(changed.sum())} of {ids.numel()} ids passed in were changed by the call; first at "
                  f"{at}: was {int(ids[tuple(at)])}, now {int(passed_in[tuple(at)])}")
    report.add(Item("the ids passed in are not modified (no in-place changes)", not detail, detail,
                    CAUSES["input_modified_in_place"] if detail else "", EXACT))

    special = torch.isin(ids, torch.tensor(SPECIAL_IDS))
    maskable = ~special
    selected = kinds != NOT_SELECTED

    # 3. specials are never selected
    bad = selected & special
    detail = ""
    if bool(bad.any()):
        at = _first(bad)
        counts = ", ".join(f"{name} {int((bad & (ids == i)).sum())}"
                           for name, i in (("[PAD]", PAD_ID), ("[MASK]", MASK_ID), ("[UNK]", UNK_ID)))
        detail = (f"{int(bad.sum())} of {int(special.sum())} special positions selected ({counts}); first at "
                  f"{at}: id {int(ids[tuple(at)])}, kind {int(kinds[tuple(at)])}")
    report.add(Item("special ids ([PAD], [MASK], [UNK]: never_select_ids) are never selected", not detail, detail,
                    CAUSES["specials_selected"] if detail else "", EXACT))

    # 4. labels: the original id where selected, -100 elsewhere
    ignore = torch.full_like(labels, IGNORE_INDEX)
    wrong_unselected = ~selected & (labels != IGNORE_INDEX)
    wrong_selected = selected & (labels != ids)
    detail, cause = "", ""
    if bool(wrong_unselected.any()):
        at = _first(wrong_unselected)
        detail = (f"{int(wrong_unselected.sum())} of {int((~selected).sum())} unselected positions have a label "
                  f"other than -100; first at {at}: expected -100, got {int(labels[tuple(at)])}")
        kept = bool((labels[wrong_unselected] == ids[wrong_unselected]).all())
        cause = CAUSES["labels_kept_at_unselected"] if kept else GENERIC["labels"]
    if bool(wrong_selected.any()):
        at = _first(wrong_selected)
        detail += ("\n" if detail else "") + (
            f"{int(wrong_selected.sum())} of {int(selected.sum())} selected positions have a label other than "
            f"the original id; first at {at}: expected {int(ids[tuple(at)])}, got {int(labels[tuple(at)])}")
        if not cause:
            shows_input = bool((labels[wrong_selected] == inputs[wrong_selected]).all())
            cause = CAUSES["labels_are_masked_inputs"] if shows_input else GENERIC["labels"]
    report.add(Item("labels are the original id at selected positions and -100 elsewhere",
                    torch.equal(labels, torch.where(selected, ids, ignore)), detail, cause, EXACT))

    # 5. kinds are valid and agree with what the model sees
    problems = []
    invalid = ~torch.isin(kinds, torch.tensor([NOT_SELECTED, MASKED, RANDOMISED, UNCHANGED]))
    if bool(invalid.any()):
        at = _first(invalid)
        problems.append(f"{int(invalid.sum())} positions have a kind outside 0..3; first at {at}: "
                        f"{int(kinds[tuple(at)])} (overlapping flags summed?)")
    for kind, name, want, want_name in ((MASKED, "[MASK]", torch.full_like(ids, MASK_ID), "mask_id"),
                                        (UNCHANGED, "unchanged", ids, "the original id"),
                                        (NOT_SELECTED, "not selected", ids, "the original id")):
        bad = (kinds == kind) & (inputs != want)
        if bool(bad.any()):
            at = _first(bad)
            problems.append(f"{int(bad.sum())} positions of kind {name} do not show {want_name}; first at {at}: "
                            f"expected {int(want[tuple(at)])}, got {int(inputs[tuple(at)])}")
    report.add(Item("kinds are 0/1/2/3 and agree with inputs ([MASK] shows mask_id; unchanged and unselected "
                    "positions show the original id)", not problems, "\n".join(problems),
                    GENERIC["kinds"] if problems else "", EXACT))

    # 6. the selection rate
    n_maskable = int(maskable.sum())
    n_selected = int((selected & maskable).sum())
    rate = n_selected / n_maskable
    tolerance = SIGMAS * math.sqrt(SELECT_PROB * (1 - SELECT_PROB) / n_maskable)
    ok = abs(rate - SELECT_PROB) <= tolerance
    cause = "" if ok else (GENERIC["rate_inverted"] if abs(rate - (1 - SELECT_PROB)) <= 0.01 else GENERIC["rate"])
    report.add(Item(f"selection rate {SELECT_PROB:g} of the {n_maskable:,} maskable positions", ok,
                    "" if ok else f"expected {SELECT_PROB:g} +- {tolerance:.4f}, got {rate:.4f} "
                                  f"({n_selected:,} selected)", cause,
                    f"+-{tolerance:.4f}: 6 standard errors of a binomial with n = {n_maskable:,}"))

    # 7. the count per row: a binomial's spread (independent selection) or round(p * n) (fixed count)
    per_row_maskable = maskable.sum(-1).double()
    per_row_selected = (selected & maskable).sum(-1).double()
    p_hat = min(max(rate, 1e-9), 1 - 1e-9)          # the observed rate, so that only the spread is judged
    z = (per_row_selected - p_hat * per_row_maskable) / (per_row_maskable * p_hat * (1 - p_hat)).sqrt()
    variance = float(z.var())
    rows = ids.shape[0]
    tolerance = SIGMAS * math.sqrt(2.0 / (rows - 1))
    binomial = abs(variance - 1.0) <= tolerance
    fixed = bool(((per_row_selected - SELECT_PROB * per_row_maskable).abs() <= 1.0).all())
    ok = {"either": binomial or fixed, "independent": binomial, "fixed_count": fixed}[selection]
    cause = ""
    if not ok:
        if selection == "fixed_count":
            cause = GENERIC["fixed_count_wrong"]
        elif variance < 1.0:
            cause = CAUSES["fixed_count_per_row"] if fixed else GENERIC["fixed_count_wrong"]
        else:
            cause = GENERIC["spread_high"]
    counts = per_row_selected[:4].long().tolist()
    rule = {"either": "varies like a binomial, or is round(p * maskable) in every row",
            "independent": "varies like a binomial (independent selection)",
            "fixed_count": "is round(p * maskable) in every row (fixed count)"}[selection]
    report.add(Item(f"the number selected per row {rule} (over {rows} rows; rule: {selection})", ok,
                    "" if ok else (f"variance of (count - p*maskable) / sqrt(maskable*p*(1-p)) over the rows: "
                                   f"expected 1 +- {tolerance:.3f}, got {variance:.4f}; fixed count "
                                   f"round(p*maskable) +- 1 in every row: {'yes' if fixed else 'no'} (first rows "
                                   f"select {counts} of {per_row_maskable[:4].long().tolist()})"), cause,
                    f"+-{tolerance:.3f}: 6 standard errors of the sample variance of {rows} standard normal "
                    f"values, sqrt(2/{rows - 1}); a fixed count may be off round(p*n) by 1 (floor, ceil, max(1, .))"))
    statistical = [report.items[-2], report.items[-1]]         # the rate and the count per row

    # 7b. rows are selected independently of each other: pairs of rows (2k, 2k + 1) are both selected at a
    # position both can select with probability p^2, not p (a selection broadcast over the batch)
    both = maskable[0::2] & maskable[1::2]
    pairs = int(both.sum())
    co_selected = int((selected[0::2] & selected[1::2] & both).sum())
    co_rate, want = co_selected / max(pairs, 1), p_hat ** 2
    tolerance = SIGMAS * math.sqrt(want * (1 - want) / max(pairs, 1))
    ok = abs(co_rate - want) <= tolerance
    # shared: nearer a row's own rate p (rows select the same positions) than p^2 (independent rows)
    shared = not ok and co_rate > (p_hat + want) / 2
    report.add(Item(f"rows are selected independently: two rows both select a position with probability p^2 "
                    f"(over {pairs:,} position pairs of rows 2k, 2k+1)", ok,
                    "" if ok else (f"expected {want:.4f} +- {tolerance:.4f} (p = {p_hat:.4f}), got {co_rate:.4f}; "
                                   f"the first rows select positions {_positions(selected[0])} and "
                                   f"{_positions(selected[1])}"),
                    "" if ok else (CAUSES["selection_shared_across_rows"] if shared else GENERIC["rows"]),
                    f"+-{tolerance:.4f}: 6 standard errors of a binomial with n = {pairs:,} and p^2"))
    statistical.append(report.items[-1])

    # 7c. every position is as likely as any other: per-column counts over the rows (chi-square)
    column_maskable = maskable.sum(0).double()
    column_selected = (selected & maskable).sum(0).double()
    used = column_maskable >= 30
    expected_count = p_hat * column_maskable[used]
    chi_square = float(((column_selected[used] - expected_count) ** 2 / (expected_count * (1 - p_hat))).sum())
    df = int(used.sum())
    bound = _chi_square_bound(df)
    ok = chi_square <= bound
    column_rates = column_selected / column_maskable.clamp(min=1)
    quarters = [float(column_rates[i * SEQ // 4:(i + 1) * SEQ // 4][used[i * SEQ // 4:(i + 1) * SEQ // 4]].mean())
                for i in range(4)]
    report.add(Item(f"every position of a row is equally likely to be selected (the rate of each of the {df} "
                    f"positions over the rows)", ok,
                    "" if ok else (f"chi-square of the per-position counts: expected <= {bound:.1f}, got "
                                   f"{chi_square:.1f}; the rate by quarter of the row: "
                                   + ", ".join(f"{q:.3f}" for q in quarters)),
                    "" if ok else (CAUSES["selection_shared_across_rows"] if shared
                                   else CAUSES["selection_depends_on_position"]),
                    f"chi-square <= {bound:.1f}: its quantile 6 sigma up for {df} degrees of freedom "
                    f"(Wilson-Hilferty), positions with >= 30 maskable rows"))
    statistical.append(report.items[-1])
    position_dependent = not ok and not shared

    # 8. the 80/10/10 split of the selected
    n, shares = _shares(kinds[selected])
    expected = [MASK_PROB, RANDOM_PROB, UNCHANGED_PROB]
    ok = _within(shares, expected, [SHARE_ATOL] * 3)
    cause = ""
    if not ok:
        cause = (CAUSES["independent_draws"]
                 if _within(shares, _independent_shares(MASK_PROB, RANDOM_PROB), [SHARE_ATOL] * 3)
                 else GENERIC["shares"])
    shown = "/".join(f"{s:.4f}" for s in shares)
    small = "" if n >= MIN_SELECTED else f" (only {n:,} selected: the bound assumes >= {MIN_SELECTED:,})"
    report.add(Item("the selected split 80/10/10 into [MASK] / random / unchanged", ok,
                    "" if ok else f"expected 0.8/0.1/0.1 +- {SHARE_ATOL}, got {shown} of {n:,} selected{small}",
                    cause, SHARE_REASON))

    # 9. random replacements are real ids
    cause = ""
    randomised = kinds == RANDOMISED
    inserted = inputs[randomised]
    real = torch.tensor(REAL_IDS)
    not_real = ~torch.isin(inserted, real)
    detail = ""
    if bool(not_real.any()):
        at = _first(randomised & ~torch.isin(inputs, real))
        got_special = torch.isin(inserted[not_real], torch.tensor(SPECIAL_IDS))
        detail = (f"{int(not_real.sum())} of {inserted.numel():,} random replacements are not real ids "
                  f"({int(got_special.sum())} of them specials); first at {at}: got {int(inputs[tuple(at)])}")
        cause = CAUSES["special_ids_inserted"] if bool(got_special.any()) else GENERIC["replacement_ids"]
    report.add(Item("random replacements are real ids (replacement_ids), never a special", not detail, detail,
                    cause if detail else "", EXACT))

    # 10. ... drawn uniformly from all of them
    counts = torch.bincount(inserted[~not_real] - REAL_IDS[0], minlength=len(REAL_IDS)).double()
    total = float(counts.sum())
    df = len(REAL_IDS) - 1
    bound = _chi_square_bound(df)
    if total > 0:
        expected_count = total / len(REAL_IDS)
        chi_square = float(((counts - expected_count) ** 2 / expected_count).sum())
    else:
        chi_square = float("inf")
    ok = chi_square <= bound
    detail, cause = "", ""
    if not ok:
        never = [REAL_IDS[0] + int(i) for i in (counts == 0).nonzero().flatten()]
        detail = (f"chi-square of the {int(total):,} replacements over the {len(REAL_IDS)} real ids: expected "
                  f"<= {bound:.1f}, got {chi_square:.1f}; counts range {int(counts.min())}..{int(counts.max())}"
                  + (f"; never drawn: {never}" if never else ""))
        cause = CAUSES["replacements_miss_last_id"] if never and total > 0 else GENERIC["spread_ids"]
    report.add(Item(f"random replacements spread uniformly over all {len(REAL_IDS)} real ids", ok, detail, cause,
                    f"chi-square <= {bound:.1f}: its quantile 6 sigma up for {df} degrees of freedom "
                    f"(Wilson-Hilferty)"))

    # 11. the probabilities passed in are used
    other_ids = make_ids(OTHER_BATCH, OTHER_SEQ, data)
    other = raise_failed(_mask(run_masker, other_ids.clone(), mask_seed, OTHER_PROBS))
    other_kinds = other.kinds.cpu().long()
    other_maskable = ~torch.isin(other_ids, torch.tensor(SPECIAL_IDS))
    other_selected = other_kinds != NOT_SELECTED
    m = int(other_maskable.sum())
    other_rate = int((other_selected & other_maskable).sum()) / m
    n, other_shares = _shares(other_kinds[other_selected])
    select_p, mask_p, random_p = OTHER_PROBS
    want = [mask_p, random_p, 1 - mask_p - random_p]

    def tolerances(ps):
        return [SIGMAS * math.sqrt(p * (1 - p) / max(n, 1)) for p in ps]

    rate_tolerance = SIGMAS * math.sqrt(select_p * (1 - select_p) / m)
    ok = abs(other_rate - select_p) <= rate_tolerance and _within(other_shares, want, tolerances(want))
    cause = ""
    if not ok:
        independent = _independent_shares(mask_p, random_p)
        hard_coded = [MASK_PROB, RANDOM_PROB, UNCHANGED_PROB]
        if (abs(other_rate - SELECT_PROB) <= SIGMAS * math.sqrt(SELECT_PROB * (1 - SELECT_PROB) / m)
                and _within(other_shares, hard_coded, tolerances(hard_coded))):
            cause = CAUSES["probabilities_hard_coded"]
        elif (abs(other_rate - select_p) <= rate_tolerance
              and _within(other_shares, independent, tolerances(independent))):
            cause = CAUSES["independent_draws"]
        else:
            cause = GENERIC["probabilities"]
    shown = "/".join(f"{s:.3f}" for s in other_shares)
    report.add(Item(f"other probabilities are followed: select_prob {select_p}, mask_token_prob {mask_p}, "
                    f"random_token_prob {random_p} ({OTHER_BATCH}x{OTHER_SEQ} ids)", ok,
                    "" if ok else (f"expected selection {select_p} and split {want[0]:.3f}/{want[1]:.3f}/"
                                   f"{want[2]:.3f}, got selection {other_rate:.4f} and split {shown} of "
                                   f"{n:,} selected"), cause,
                    f"6 standard errors of binomials with n = {m:,} (selection) and n = number selected (split)"))
    statistical.append(report.items[-1])
    # A selection shared by the rows, or one that depends on the position, also moves the rate and the
    # count per row: name it there too, rather than a rate or a fixed count.
    for item in statistical:
        if not item.passed and (shared or position_dependent):
            item.cause = CAUSES["selection_shared_across_rows" if shared else "selection_depends_on_position"]

    # 12-14. all randomness comes from rng
    small_ids = make_ids(SMALL_BATCH, SMALL_SEQ, data)

    def outputs(seed: int, global_seed: int):
        torch.manual_seed(global_seed)
        result = raise_failed(_mask(run_masker, small_ids.clone(), seed))
        return [t.cpu().long() for t in (result.inputs, result.labels, result.kinds)]

    def differences(a, b) -> str:
        return ", ".join(f"{name} differ at {int((x != y).sum())} positions"
                         for name, x, y in zip(("inputs", "labels", "kinds"), a, b) if not torch.equal(x, y))

    first = outputs(11, 1)
    again = outputs(11, 1)
    other_global = outputs(11, 2)
    other_seed = outputs(12, 1)
    same = differences(first, again)
    report.add(Item("the same rng seed (and the same global seed) gives the same output", not same,
                    f"two calls with torch.Generator().manual_seed(11): {same}" if same else "",
                    GENERIC["not_reproducible"] if same else "", EXACT))
    global_matters = differences(first, other_global)
    report.add(Item("changing torch's global seed between two calls with the same rng seed changes nothing",
                    not global_matters,
                    (f"rng seed 11 after torch.manual_seed(1), then after torch.manual_seed(2): {global_matters}"
                     if global_matters else ""),
                    (GENERIC["not_reproducible"] if same else CAUSES["generator_ignored"]) if global_matters else "",
                    EXACT))
    different = differences(first, other_seed)
    cause = ""
    if not different:
        cause = CAUSES["generator_ignored"] if global_matters else GENERIC["rng_unused"]
    report.add(Item("a different rng seed gives a different output", bool(different),
                    "" if different else "rng seeds 11 and 12 (same global seed) give identical outputs", cause,
                    f"{SMALL_BATCH}x{SMALL_SEQ} ids: two seeds give the same selection with probability < 1e-100"))
