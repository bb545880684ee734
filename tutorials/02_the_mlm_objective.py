# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The MLM objective
#
# A masked language model learns by filling in blanks: hide some characters of a window, show the
# rest, and train the model to recover what was hidden from the context on **both** sides. This
# notebook opens up the piece that makes the blanks, `sm.BertMasker`, and the loss that grades the
# answers.
#
# **Learning objectives**
#
# - Describe BERT's masking rule: select 15% of the positions; show 80% of those as `[MASK]`, 10% as
#   a random character and leave 10% unchanged — and read it in `BertMasker`'s source.
# - Read a `MaskedBatch` (`inputs`, `labels`, `kinds`) and explain why the labels are −100 off the
#   selection and why the loss sees only the selected positions.
# - Measure the kind rates on a million positions with binomial error bars, and tell a correct
#   80/10/10 from the common "independent draws" bug (81/10/9).
# - Explain why 80/10/10 rather than always `[MASK]`: the train/test mismatch of the `[MASK]` token.
#
# Runs in about 6 s on 2 CPU cores; `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

import scratchmlm as sm
from scratchmlm.masking import MASKED, NOT_SELECTED, RANDOMISED, UNCHANGED
from scratchmlm.classroom.notebook import FAST, check, use_threads
from scratchmlm.sample import visible

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

SEQ_LEN = 32
text = sm.load_text("tinyshakespeare")
tokenizer = sm.CharTokenizer.from_text(text)
train_ids = tokenizer.encode(sm.split_text(text).train, parse_special=False)
masker = sm.BertMasker.for_tokenizer(tokenizer)
print(masker)

# %% [markdown]
# ## 1. The objective
#
# A left-to-right language model predicts each character from the characters *before* it. A masked
# language model predicts a hidden character from the characters before **and after** it, so the
# encoder's vector at a position becomes a summary of its whole window — BERT's reason for the
# objective. The price: a position that is visible is not a question, so only the hidden positions
# give a training signal.
#
# > **Why select 15% of the positions?** Each selected position is a question, but also a hole in
# > the context of its neighbours. Select too few and a batch teaches little (most of the forward
# > pass is spent on positions nobody asks about); select too many and the questions become
# > unanswerable, because the context that would answer them is hidden too. BERT's 15% is the
# > compromise; exercise 2 measures how fast the context disappears as the rate grows.

# %% [markdown]
# ## 2. The masker, line by line
#
# `BertMasker.__call__` takes ids `[batch, seq]` and an explicit `torch.Generator`. Read the middle:
# one uniform draw `u` selects (`u < 0.15`), a **second, single** draw `kind_draw` decides what a
# selected position becomes — `[MASK]` below 0.8, a random real character between 0.8 and 0.9,
# itself above 0.9 — so the three kinds are disjoint and together cover the selection exactly.

# %%
print(inspect.getsource(sm.BertMasker.__call__))

# %% [markdown]
# Two details worth noticing. Special tokens (`[PAD]`, `[MASK]`, `[UNK]`) are never selected:
# `maskable` excludes them, so padding is never a question. And a "random" position becomes a
# random **real** character (`replacement_ids` = ids 3..67), never a special.

# %% [markdown]
# ## 3. One batch, coloured by kind

# %%
batch_rng = torch.Generator().manual_seed(0)
mask_rng = torch.Generator().manual_seed(1)
ids = sm.random_windows(train_ids, 8, SEQ_LEN, batch_rng)               # [batch, seq]
masked = masker(ids, mask_rng)
for name in ("inputs", "labels", "kinds"):
    tensor = getattr(masked, name)
    print(f"{name:>6}: {list(tensor.shape)} {tensor.dtype}")
print()
print("original   ", "".join(visible(c) for c in tokenizer.decode(ids[0])))
print("model sees ", " ".join(visible(tokenizer.vocab[i]) for i in masked.inputs[0].tolist()))
print("labels     ", masked.labels[0].tolist())
print("kinds      ", masked.kinds[0].tolist(), " (0 not selected, 1 [MASK], 2 random, 3 unchanged)")

# %% tags=["figure"]
KIND_COLOURS = {NOT_SELECTED: "#eeeeee", MASKED: "tab:red", RANDOMISED: "tab:orange", UNCHANGED: "tab:green"}
KIND_LABELS = {NOT_SELECTED: "not selected (no label)", MASKED: "[MASK]", RANDOMISED: "random character",
               UNCHANGED: "unchanged (but scored)"}
kinds = masked.kinds.numpy()
fig, ax = plt.subplots(figsize=(13, 4.4))
ax.imshow(kinds, cmap=ListedColormap([KIND_COLOURS[k] for k in range(4)]), vmin=-0.5, vmax=3.5, aspect="auto")
for row in range(kinds.shape[0]):
    for col in range(kinds.shape[1]):
        seen = masked.inputs[row, col].item()
        shown = "M" if seen == tokenizer.mask_id else visible(tokenizer.vocab[seen])
        colour = "black" if kinds[row, col] == NOT_SELECTED else "white"
        ax.text(col, row - 0.08, shown, ha="center", va="center", fontsize=9, color=colour, fontweight="bold")
        if kinds[row, col] != NOT_SELECTED:   # the label: what the model must answer
            ax.text(col, row + 0.3, visible(tokenizer.vocab[masked.labels[row, col].item()]),
                    ha="center", va="center", fontsize=6, color="white")
counts = {k: int((masked.kinds == k).sum()) for k in range(4)}
ax.legend(handles=[Patch(color=KIND_COLOURS[k], label=f"{KIND_LABELS[k]}: {counts[k]}") for k in range(4)],
          loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=9)
ax.set_xticks(range(0, SEQ_LEN, 4))
ax.set_yticks(range(kinds.shape[0]))
ax.set_xlabel("position in the window (seq)")
ax.set_ylabel("window (batch)")
ax.set_title("What the model sees (big) and, at the selected positions, the label it must predict (small)")
plt.show()

# %% [markdown]
# In a batch of 256 positions there are a few dozen selected ones, only a handful of them random
# or unchanged. At this size the 80/10/10 split is invisible in the noise — section 5 counts a
# million positions instead.

# %% [markdown]
# ## 4. Labels, and what the loss sees
#
# `labels` holds the original id at every selected position and −100 everywhere else. Three facts,
# checked on the batch:

# %%
selected = masked.selected                                                  # labels != -100
print("selected = kinds != NOT_SELECTED:      ", torch.equal(selected, masked.kinds != NOT_SELECTED))
print("labels are -100 off the selection:     ", bool((masked.labels[~selected] == sm.IGNORE_INDEX).all()))
print("labels are the original ids on it:     ", torch.equal(masked.labels[selected], ids[selected]))
print("inputs are untouched off the selection:", torch.equal(masked.inputs[~selected], ids[~selected]))

# %% [markdown]
# The loss, `sm.masked_cross_entropy`, averages the cross-entropy over the positions whose label is
# not −100 — PyTorch's `ignore_index` does the skipping:

# %%
print(inspect.getsource(sm.masked_cross_entropy))

# %% [markdown]
# So the loss cannot depend on the logits of an unselected position. Feed random logits
# `[batch, seq, vocab]`, backpropagate, and look where the gradient is non-zero; then change the
# logits of every unselected position and see that the loss does not move:

# %%
rng = torch.Generator().manual_seed(2)
logits = torch.randn(*ids.shape, tokenizer.vocab_size, generator=rng, requires_grad=True)
loss, count = sm.masked_cross_entropy(logits, masked.labels)
loss.backward()
has_gradient = logits.grad.abs().sum(dim=-1) != 0                          # [batch, seq]
print(f"loss {loss.item():.4f} over {count.item()} selected positions")
print("gradient exactly where selected:", torch.equal(has_gradient, selected))
scrambled = logits.detach().clone()
scrambled[~selected] = torch.randn(int((~selected).sum()), tokenizer.vocab_size, generator=rng) * 100
print("loss with unselected logits scrambled:", f"{sm.masked_cross_entropy(scrambled, masked.labels)[0].item():.4f}")

# %% [markdown]
# > **Why −100, and why score only the selected positions?** −100 is the default `ignore_index` of
# > `F.cross_entropy`, so the standard loss skips those positions with no mask arithmetic of ours.
# > And they must be skipped: at an unselected position the input *is* the answer, so scoring it
# > would reward copying the input to the output — a trivial function that would supply 85% of the
# > loss and drown the 15% that requires understanding context. (The selected-but-unchanged
# > positions also show their answer; why they are scored anyway is the subject of section 6.)

# %% [markdown]
# ## 5. The kind rates, measured on a million positions
#
# A rate measured on `n` independent trials has binomial standard error `√(p(1−p)/n)`. To see a
# one-point difference between 80% and 81% clearly we need that error near 0.1 points, i.e.
# `n` ≈ 160,000 selected positions — about a million positions in all.

# %%
N_WINDOWS = 4096 if FAST else 32768
big = sm.random_windows(train_ids, N_WINDOWS, SEQ_LEN, torch.Generator().manual_seed(3))
big_masked = masker(big, torch.Generator().manual_seed(4))
n_selected = int(big_masked.selected.sum())
print(f"{big.numel():,} positions, {n_selected:,} selected: "
      f"{n_selected / big.numel():.4f} (target {masker.select_prob}, "
      f"± {math.sqrt(0.15 * 0.85 / big.numel()):.4f} standard error)")


def kind_rates(kinds: torch.Tensor) -> dict[int, tuple[float, float]]:
    """Share of each kind among the selected positions, with its binomial standard error."""
    n = int((kinds != NOT_SELECTED).sum())
    rates = {}
    for kind in (MASKED, RANDOMISED, UNCHANGED):
        p = int((kinds == kind).sum()) / n
        rates[kind] = (p, math.sqrt(p * (1 - p) / n))
    return rates


bert_rates = kind_rates(big_masked.kinds)

# %% [markdown]
# For contrast, here is a masker that gets it **wrong** in a way that is easy to write and hard to
# notice. It is written in this cell only as a counter-example; it is not part of scratchmlm.

# %%
# ⚠ A DELIBERATELY BUGGY masker, for contrast only: "random" and "unchanged" get separate coin flips.
# Where both come up, random wins; only positions with neither become [MASK]. Expected shares of the
# selection: random 0.1, unchanged 0.9 * 0.1 = 0.09, [MASK] 0.9 * 0.9 = 0.81.
def independent_draws_kinds(ids: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    selected = torch.rand(ids.shape, generator=rng) < 0.15
    randomised = selected & (torch.rand(ids.shape, generator=rng) < 0.1)
    unchanged = selected & ~randomised & (torch.rand(ids.shape, generator=rng) < 0.1)
    to_mask = selected & ~randomised & ~unchanged
    return (to_mask * MASKED + randomised * RANDOMISED + unchanged * UNCHANGED).to(torch.uint8)


buggy_rates = kind_rates(independent_draws_kinds(big, torch.Generator().manual_seed(5)))

TARGETS = {MASKED: 0.8, RANDOMISED: 0.1, UNCHANGED: 0.1}
NAMES = {MASKED: "[MASK]", RANDOMISED: "random", UNCHANGED: "unchanged"}
print(f"{'kind':>10} {'target':>7} {'BertMasker':>22} {'independent draws':>24}")
for kind, target in TARGETS.items():
    cells = [f"{p:.4f} ± {se:.4f} ({(p - target) / se:+5.1f} SE)" for p, se in (bert_rates[kind], buggy_rates[kind])]
    print(f"{NAMES[kind]:>10} {target:>7.2f}   {cells[0]}   {cells[1]}")

# %% tags=["figure"]
x = np.arange(3)
fig, (rates_ax, gap_ax) = plt.subplots(1, 2, figsize=(12, 4))
for offset, (label, rates, colour) in enumerate((("BertMasker (one draw)", bert_rates, "tab:blue"),
                                                 ("independent draws (buggy)", buggy_rates, "tab:grey"))):
    values = np.array([rates[k][0] for k in TARGETS]) * 100
    errors = 2 * np.array([rates[k][1] for k in TARGETS]) * 100
    targets = np.array(list(TARGETS.values())) * 100
    rates_ax.bar(x + (offset - 0.5) * 0.38, values, width=0.38, color=colour, label=label)
    gap_ax.bar(x + (offset - 0.5) * 0.38, values - targets, width=0.38, color=colour, yerr=errors,
               capsize=4, label=label)
gap_ax.plot(x + 0.19, [1.0, 0.0, -1.0], "D", color="black", markersize=5,
            label="independent draws' expectation (81/10/9)")
for i, target in enumerate(TARGETS.values()):
    rates_ax.hlines(target * 100, i - 0.42, i + 0.42, color="black", linestyle="--",
                    label="BERT's 80/10/10" if i == 0 else None)
rates_ax.set_xticks(x, list(NAMES.values()))
rates_ax.set_ylabel("share of the selected positions (%)")
rates_ax.set_title(f"Kind rates on {big.numel():,} positions")
rates_ax.legend(fontsize=8)
gap_ax.axhline(0, color="black", linewidth=1)
gap_ax.set_xticks(x, list(NAMES.values()))
gap_ax.set_ylabel("measured − target (percentage points)")
gap_ax.set_title("Distance from 80/10/10, with ±2 standard errors")
gap_ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# `BertMasker`'s three rates sit within about two standard errors of 80/10/10. The independent-draws
# masker lands near its own expectation, 81/10/9: about a point off on `[MASK]` and on unchanged,
# ten standard errors or so in full mode, far beyond chance — although every single batch it makes
# *looks* right. A rate bug is a
# statistics question: the package's test suite (`tests/test_masking.py`) asserts every rate within
# 5 standard errors on a million real positions, which a correct masker fails with probability
# below 10⁻⁶ while this bug fails every time.

# %% [markdown]
# ## 6. Why 80/10/10, and not always `[MASK]`?
#
# > **Why not replace every selected character by `[MASK]`?** Because `[MASK]` exists only in
# > training. When the trained encoder is used — to represent a real sentence, to be fine-tuned on a
# > task, or to judge a text position by position — its input contains no `[MASK]` at all. A model
# > trained only on `[MASK]` questions learns two habits that then misfire: every *visible*
# > character is guaranteed correct, and no visible character is ever asked about, so the vector at a
# > visible position need not carry a prediction of that position at all. That gap between the
# > inputs of training and of use is the **train/test mismatch**. The 10% **unchanged** positions
# > break the second habit: a visible character may be a question, so every position's vector must
# > predict its own character from context. The 10% **random** positions break the first: a visible
# > character may be a lie, so the model must check each one against its context instead of copying
# > it. Both are kept rare, so that most questions are still honest `[MASK]` questions.
#
# The rates say how much a visible character can be trusted. Measured on the million positions:
# of the positions that show the model a real character, the share that will be scored is

# %%
shows_real = big_masked.inputs != tokenizer.mask_id
scored_and_visible = (shows_real & big_masked.selected).sum() / shows_real.sum()
print(f"P(scored | a real character is shown) = {scored_and_visible:.4f}  "
      f"(= 0.15 × 0.2 / (1 − 0.15 × 0.8) = {0.15 * 0.2 / (1 - 0.15 * 0.8):.4f})")

# %% [markdown]
# Small, but never zero — which is the point. The flip side shows up in evaluation: an unchanged
# position is a question whose answer is in plain sight, so accuracy on that kind flatters the model
# (notebook 07 scores the three kinds separately).

# %% [markdown]
# ## Exercises

# %% [markdown]
# ### Exercise 1: how often is a visible character a lie?
#
# The model sees a real character (not `[MASK]`) at some position. What is the probability that it
# is **not** the original character? Derive it from the masker's probabilities
# (`masker.select_prob`, `masker.mask_token_prob`, `masker.random_token_prob`; there are 65 real
# characters and a random replacement is drawn uniformly among them), then compare with the rate
# measured on the million positions.

# %% tags=["exercise"]
# BEGIN SOLUTION
s, m, r = masker.select_prob, masker.mask_token_prob, masker.random_token_prob
num_real = len(masker.replacement_ids)
answer_1 = s * r * (1 - 1 / num_real) / (1 - s * m)
# END SOLUTION

# %%
lies = shows_real & (big_masked.inputs != big)
measured_1 = (lies.sum() / shows_real.sum()).item()
standard_error_1 = math.sqrt(measured_1 * (1 - measured_1) / shows_real.sum().item())
check("Exercise 1", answer_1, measured_1, tolerance=4 * standard_error_1,
      hint="P(wrong and visible) / P(visible): a random replacement is wrong unless it redraws the original; "
           "a real character is visible unless the position became [MASK].")

# %% [markdown]
# ### Exercise 2: how much context survives the masking?
#
# The bigram baseline (and any model) answers a `[MASK]` question best when both neighbours are
# visible. Write `both_neighbours_visible(select_prob, mask_prob, seq_len)`: the expected share of
# `[MASK]` positions whose left and right neighbours are both inside the window and not `[MASK]`
# themselves. The check measures it with `BertMasker` at select rates 15% and 50%. (At 50%, what
# happens to the context?)

# %% tags=["exercise"]
def both_neighbours_visible(select_prob: float, mask_prob: float, seq_len: int) -> float:
    # BEGIN SOLUTION
    return (seq_len - 2) / seq_len * (1 - select_prob * mask_prob) ** 2
    # END SOLUTION


answer_2 = [both_neighbours_visible(p, 0.8, SEQ_LEN) for p in (0.15, 0.5)]

# %%
def measured_both_visible(select_prob: float) -> float:
    inputs = sm.BertMasker.for_tokenizer(tokenizer, select_prob=select_prob)(
        big, torch.Generator().manual_seed(5)).inputs
    is_mask = inputs == tokenizer.mask_id
    both = is_mask[:, 1:-1] & ~is_mask[:, :-2] & ~is_mask[:, 2:]
    return (both.sum() / is_mask.sum()).item()


check("Exercise 2", answer_2, [measured_both_visible(p) for p in (0.15, 0.5)], tolerance=0.015,
      hint="the two end positions of a window lack a neighbour; each neighbour is [MASK] "
           "with probability select_prob * mask_prob, independently.")
