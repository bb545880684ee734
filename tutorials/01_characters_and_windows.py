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
# # 01 · Characters and windows
#
# Before a model can learn anything, text has to become tensors. This notebook follows Tiny
# Shakespeare from a file on disk to the two things training needs: batches of random **training
# windows** `[batch, seq]` and a **frozen validation set** that every evaluation scores the same way.
#
# **Learning objectives**
#
# - Split a corpus 90/10 *by position* and explain why splitting random windows instead would leak.
# - Build the character vocabulary (three special tokens, then the corpus characters) and encode and
#   decode text with it, including characters the corpus never contained (`[UNK]`, `strict=True`).
# - Read the character-frequency chart as a model: it *is* the unigram baseline's prediction, and
#   its tallest bar is the accuracy every later model must beat.
# - Draw random training windows with an explicit generator, and explain why the validation set is
#   frozen (same windows, same masks, one fingerprint) so that numbers compare across runs.
#
# Runs in about 6 s on 2 CPU cores; `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch

import scratchmlm as sm
from scratchmlm.evaluate import unigram_baseline, unigram_log_probs
from scratchmlm.classroom.notebook import FAST, check, use_threads
from scratchmlm.sample import visible

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

SEQ_LEN = 32          # characters per window, the training default
BATCH_SIZE = 64       # windows per training batch, the training default

# %% [markdown]
# ## 1. The corpus
#
# `sm.load_text("tinyshakespeare")` returns the whole corpus as one Python string, after checking
# the file's sha256 (a truncated or edited copy is refused, so every reader trains on the same text).

# %%
text = sm.load_text("tinyshakespeare")
print(f"{len(text):,} characters")
print(text[:230])

# %% [markdown]
# ## 2. The 90/10 split, by position
#
# The first 90% of the characters train the model; the last 10% are held out for validation. The
# cut is one integer:

# %%
print(inspect.getsource(sm.split_text))
split = sm.split_text(text)
cut = len(split.train)
print(f"cut at character {cut:,}: {len(split.train):,} train, {len(split.valid):,} validation")
print(f"... {split.train[-60:]!r} ‖ {split.valid[:60]!r} ...")

# %% [markdown]
# > **Why split by position, not by random windows?** Training does not see the text as disjoint
# > pieces: it draws windows at *any* offset, so two windows that start one character apart share
# > 31 of their 32 characters. If we cut the text into random windows and kept 10% of them for
# > validation, the training windows would cover almost every validation character, in the very
# > same context. Validation would measure memory, not generalisation. With a single cut nothing is
# > shared: training windows are cut from the text before it, validation windows from the text after
# > it. (The text after the cut is still Shakespeare, even the same play for a while, so this is the
# > honest kind of held-out data: new passages in a familiar style.)
#
# We can measure the leak. Pretend the validation windows were drawn at random from the whole text,
# and count how much of them a full default run (6,000 steps of 64 windows) would have trained on:

# %%
def covered_by(starts: torch.Tensor, length: int, n: int) -> torch.Tensor:
    """Which of positions 0..n-1 lie inside at least one window [start, start + length)."""
    edges = torch.bincount(starts, minlength=n + length) - torch.bincount(starts + length, minlength=n + length)
    return edges.cumsum(0)[:n] > 0


rng = torch.Generator().manual_seed(0)
n = len(text)
run_windows = 6000 * BATCH_SIZE
train_starts = torch.randint(0, n - SEQ_LEN + 1, (run_windows,), generator=rng)
held_out_starts = torch.randint(0, n - SEQ_LEN + 1, (1024,), generator=rng)
seen = covered_by(train_starts, SEQ_LEN, n)
valid_positions = (held_out_starts[:, None] + torch.arange(SEQ_LEN)).flatten()
print(f"random-window split: {seen[valid_positions].float().mean():.2%} of the validation characters "
      f"also sit inside a training window ({run_windows:,} windows)")
print("split by position:   0% (training windows never cross the cut)")

# %% [markdown]
# ## 3. The vocabulary: three special tokens, then the characters
#
# `CharTokenizer` gives every distinct character one id. Ids 0, 1 and 2 are reserved for the
# special tokens; the corpus characters follow in sorted (code point) order.

# %%
tokenizer = sm.CharTokenizer.from_text(text)
print(f"vocab_size = {tokenizer.vocab_size}: {len(tokenizer.special_ids)} specials + "
      f"{len(tokenizer.characters)} characters; real characters are ids "
      f"{tokenizer.first_real_id}..{tokenizer.vocab_size - 1}")
print("  ".join(f"{i}:{visible(token)}" for i, token in enumerate(tokenizer.vocab)))

# %% [markdown]
# > **Why characters, and not words or sub-words?** Sixty-five symbols cover every character of the
# > corpus, so nothing is ever out of vocabulary and predicting a masked position is a 65-way choice
# > a small model can learn in minutes on a CPU. The price is longer sequences (a word is several
# > positions) and a model that must learn spelling before it can learn grammar. For a model meant
# > to be read and trained on a laptop, that trade is right; BERT itself uses ~30,000 word pieces.
#
# > **Why put the special tokens first, at fixed ids?** `[PAD]` = 0 fills the end of a short
# > sequence, `[MASK]` = 1 is the symbol the masker shows in place of a hidden character, and
# > `[UNK]` = 2 stands for any character outside the alphabet. With the three at the front, the real
# > characters are one contiguous range `first_real_id .. vocab_size - 1`: "a random real character"
# > is a single `randint`, and "never select a special" is a single comparison.

# %% [markdown]
# ## 4. Encode and decode
#
# `encode` turns text into a 1-D `LongTensor`; `decode` turns ids back into text. For a corpus of a
# million characters the lookup must not be a Python loop: `encode_array` looks every code point up
# in the sorted alphabet at once with `np.searchsorted`, and anything it does not find becomes `[UNK]`.

# %%
print(inspect.getsource(sm.CharTokenizer.encode_array))

# %%
line = "To be, or not to be"
ids = tokenizer.encode(line)
print(ids.tolist())
print(repr(tokenizer.decode(ids)))

train_ids = tokenizer.encode(split.train, parse_special=False)
valid_ids = tokenizer.encode(split.valid, parse_special=False)
print(f"train_ids {list(train_ids.shape)} {train_ids.dtype}, valid_ids {list(valid_ids.shape)}; "
      f"round trip exact: {tokenizer.decode(train_ids) == split.train}")

# %% [markdown]
# A *prompt* may contain the literal text `[MASK]`; by default `encode` parses it into the single id 1.
# The corpus is encoded with `parse_special=False`, so that every character, brackets included,
# round-trips as itself:

# %%
prompt = "To be, or [MASK]ot to be"
print("prompt:", tokenizer.encode(prompt).tolist())
print("corpus:", tokenizer.encode(prompt, parse_special=False).tolist())

# %% [markdown]
# ### Characters the corpus never contained
#
# Tiny Shakespeare is plain ASCII. An accented letter or a typographic dash has no id of its own,
# so it becomes `[UNK]` (id 2). With `strict=True` the tokenizer refuses instead and says which
# character and where:

# %%
foreign = "naïve café — O Romeo"
unk_ids = tokenizer.encode(foreign)
print(unk_ids.tolist())
print(repr(tokenizer.decode(unk_ids)))
try:
    tokenizer.encode(foreign, strict=True)
except sm.ScratchMLMError as error:
    print("strict=True:", error)

# %% [markdown]
# > **Why map unknown characters to `[UNK]` by default, and offer `strict`?** A prompt typed by a
# > person may contain anything; with `[UNK]` the model still runs and the unknown character keeps its
# > position, so the neighbours stay aligned. But the model never saw `[UNK]` in training (the corpus
# > has none), so its predictions next to one are guesses. When silently losing characters would be
# > a bug — encoding a new corpus with an old tokenizer — `strict=True` turns the loss into an error.

# %% [markdown]
# ## 5. Character frequencies: the first model
#
# The simplest model of a masked character ignores the context entirely and predicts how often
# each character occurs in the training text. `scratchmlm.evaluate.unigram_log_probs` is exactly
# that model — the **unigram baseline** that every evaluation prints beside the real model:

# %%
print(inspect.getsource(unigram_log_probs))
unigram = unigram_log_probs(train_ids, tokenizer.vocab_size).exp()             # [vocab]
counts = torch.bincount(train_ids, minlength=tokenizer.vocab_size)
print("sums to 1:", float(unigram.sum()))
print("equals (count + 1) / (N + vocab):",
      torch.allclose(unigram, (counts + 1.0).double() / (len(train_ids) + tokenizer.vocab_size)))
print(f"largest gap to the raw frequency count / N: "
      f"{(unigram - counts.double() / len(train_ids)).abs().max():.1e}")
print(f"entropy of the distribution: {-(unigram * unigram.log()).sum():.3f} nats")

# %% tags=["figure"]
order = torch.argsort(unigram, descending=True)
labels = [visible(tokenizer.vocab[i]) for i in order.tolist()]
fig, ax = plt.subplots(figsize=(12, 3.8))
ax.bar(range(len(order)), unigram[order].numpy(), color="tab:blue")
ax.bar([0], unigram[order[0]].item(), color="tab:orange", label="the unigram baseline's top-1 guess")
ax.set_xticks(range(len(order)), labels, fontsize=8)
for tick in ax.get_xticklabels():          # stand the specials' names up
    if len(tick.get_text()) > 1:
        tick.set_rotation(90)
ax.set_xlim(-0.7, len(order) - 0.3)
ax.set_xlabel("token (␣ space, ⏎ newline; the three specials never occur in the text)")
ax.set_ylabel("p(token), add-one smoothed")
ax.set_title("Character frequencies of the training split = the unigram baseline's prediction at every position")
ax.legend()
plt.show()

# %% [markdown]
# The chart *is* a model. Asked for any masked character, the unigram baseline answers with this
# distribution, so its top-1 guess is always a space, and its top-1 accuracy is the share of spaces
# among the positions it is scored on. Its cross-entropy on text like the training text is the
# entropy of the chart, 3.31 nats (on the validation text a little more: section 7 prints it). The
# add-one smoothing gives even the three specials, which never occur, a tiny probability, so no
# log-probability is ever −∞.
#
# > **Why compute a baseline at all?** A number alone says nothing: "15% top-1" sounds poor until you
# > learn that always answering "space" already scores it. Every evaluation in scratchmlm prints the
# > unigram baseline (no context) and a bigram baseline (one neighbour on each side), scored on the
# > same masked positions as the model, so "the model learned something" has a precise meaning: it
# > beats them.

# %% [markdown]
# ## 6. Training windows
#
# A training batch is `BATCH_SIZE` windows of `SEQ_LEN` consecutive ids, each starting at an
# independent random offset of the training split: a tensor `[batch, seq]`. The randomness comes
# from an explicit `torch.Generator`, so a seed reproduces the batch exactly.

# %%
print(inspect.getsource(sm.random_windows))
rng = torch.Generator().manual_seed(1)
batch = sm.random_windows(train_ids, batch_size=4, seq_len=SEQ_LEN, rng=rng)
print("batch", list(batch.shape))
for row in batch:
    print("  " + "".join(visible(c) for c in tokenizer.decode(row)))
again = sm.random_windows(train_ids, 4, SEQ_LEN, torch.Generator().manual_seed(1))
print("same seed, same batch:", torch.equal(batch, again))

# %% [markdown]
# > **Why random offsets rather than the text cut into consecutive blocks?** A fixed cut would show
# > every character at the same position within its window in every epoch. Random offsets show each
# > character at every position of the window, with more or less of its context cut off on either
# > side — free data augmentation — and there is no "epoch" to track: each batch is a fresh sample.

# %% [markdown]
# ## 7. The frozen validation set
#
# Validation is the opposite: **fixed** windows, evenly spaced and non-overlapping across the
# validation split, masked **once** with a fixed seed (how the masking works is notebook 02). A
# sha256 **fingerprint** over the masked inputs, labels and kinds names the result.

# %%
print(inspect.getsource(sm.FrozenValidationSet.build))
masker = sm.BertMasker.for_tokenizer(tokenizer)
valid = sm.FrozenValidationSet.build(valid_ids, masker, SEQ_LEN)
rebuilt = sm.FrozenValidationSet.build(valid_ids, masker, SEQ_LEN)
print(f"{len(valid)} windows {list(valid.batch.inputs.shape)} out of {len(valid_ids) // SEQ_LEN} "
      f"that fit; {int(valid.batch.selected.sum()):,} positions to score")
print("fingerprint:", valid.fingerprint)
print("built again:", rebuilt.fingerprint, "(identical)" if rebuilt.fingerprint == valid.fingerprint else "")
print("another seed:", sm.FrozenValidationSet.build(valid_ids, masker, SEQ_LEN, seed=7).fingerprint)

# %% [markdown]
# The picture shows where each kind of window comes from: random training windows (a different
# set every batch) to the left of the cut, the fixed validation windows to its right, and, zoomed
# in, how the two kinds are laid out.

# %% tags=["figure"]
positions = torch.arange(len(train_ids))
shown = sm.random_windows(positions, 256, SEQ_LEN, torch.Generator().manual_seed(2))[:, 0]
valid_starts = cut + sm.evenly_spaced_windows(torch.arange(len(valid_ids)), len(valid), SEQ_LEN)[:, 0]
fig, (whole, zoom) = plt.subplots(2, 1, figsize=(12, 5), height_ratios=[1, 1.3])
whole.axvspan(0, cut, color="tab:blue", alpha=0.08)
whole.axvspan(cut, len(text), color="tab:green", alpha=0.12)
whole.vlines(shown, 0.55, 0.95, color="tab:blue", linewidth=0.6, label="random training windows (256 of one draw)")
whole.vlines(valid_starts, 0.05, 0.45, color="tab:green", linewidth=0.3,
             label=f"frozen validation windows ({len(valid)})")
whole.axvline(cut, color="black", linewidth=1)
whole.set_xlim(0, len(text))
whole.set_ylim(0, 1.0)
whole.set_yticks([])
whole.set_xlabel("character position in Tiny Shakespeare")
whole.set_title("(a) Training windows anywhere before the cut, redrawn every batch; validation windows fixed, after it")
whole.legend(loc="lower left", fontsize=8, framealpha=0.95)

# (b) 1,200 characters either side of the cut: the windows of 300 training batches that start there
span = 1200
many = sm.random_windows(positions, 300 * BATCH_SIZE, SEQ_LEN, torch.Generator().manual_seed(4))[:, 0]
near = many[many >= cut - span].sort().values
for row, start in enumerate(near.tolist()):
    zoom.plot([start, start + SEQ_LEN], [row % 8 + 2] * 2, color="tab:blue", linewidth=3,
              label="training windows of 300 batches" if row == 0 else None)
for i, start in enumerate(valid_starts[valid_starts < cut + span].tolist()):
    zoom.plot([start, start + SEQ_LEN], [0.5] * 2, color="tab:green", linewidth=5,
              label="validation windows (always these)" if i == 0 else None)
zoom.axvline(cut, color="black", linewidth=1)
zoom.set_xlim(cut - span, cut + span)
zoom.set_ylim(-0.5, 11)
zoom.set_yticks([])
zoom.set_xlabel("character position (zoom on the cut)")
zoom.set_title("(b) Training windows overlap each other and never cross the cut; validation windows never overlap")
zoom.legend(loc="upper right", fontsize=8, framealpha=0.95)
fig.tight_layout()
plt.show()

# %% [markdown]
# > **Why freeze the validation set — windows *and* masks?** A validation score is an average over a
# > few thousand masked positions, so it carries sampling noise. If each evaluation drew new windows
# > and new masks, two scores would differ by that noise as well as by the model, and a "better" run
# > could just be a luckier draw. Frozen, the same positions are scored with the same masks every
# > time: differences between checkpoints and between runs are differences between models. The
# > fingerprint makes that checkable — two results with the same fingerprint were scored on exactly
# > the same masked positions.
#
# How large is the noise a frozen set removes? Score the unigram baseline on validation sets masked
# with different seeds:

# %%
seeds = range(10 if FAST else 40)
redrawn = [unigram_baseline(train_ids, sm.FrozenValidationSet.build(valid_ids, masker, SEQ_LEN, seed=s),
                            tokenizer.vocab_size).overall.top1 for s in seeds]
frozen = unigram_baseline(train_ids, valid, tokenizer.vocab_size)
print(frozen.summary())
print(f"top-1 over {len(redrawn)} re-masked sets: {np.mean(redrawn):.4f} ± {np.std(redrawn):.4f} (std)")

# %% tags=["figure"]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.hist(np.array(redrawn) * 100, bins=12, color="tab:grey", label="validation sets masked with other seeds")
ax.axvline(frozen.overall.top1 * 100, color="tab:red", linewidth=2, label="the frozen set (seed 1234), every time")
ax.set_xlabel("unigram baseline top-1 accuracy (%)")
ax.set_ylabel("number of seeds")
ax.set_title("The same model, scored on re-masked validation sets")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The model did not change, yet its score moves by a few tenths of a point from one masking to the
# next. For a trained model near 60% accuracy the noise is larger still, √(0.6 · 0.4 / 4,900) ≈ 0.7
# points — more than the default 6,000-step run gains between its last two evaluations (steps 5,500
# and 6,000 in `experiments/results/seed_cpu`). On the frozen set that noise is gone.

# %% [markdown]
# ## Exercises

# %% [markdown]
# ### Exercise 1: the id of a letter
#
# Without printing the vocabulary, work out the id of the character `"a"` from what you know of
# the layout: the specials first, then the corpus characters sorted by code point. (The corpus's
# characters are `set(text)`; `ord` gives a code point.)

# %% tags=["exercise"]
# BEGIN SOLUTION
answer_1 = len(tokenizer.special_ids) + sum(1 for c in set(text) if ord(c) < ord("a"))
# END SOLUTION

# %%
check("Exercise 1", answer_1, tokenizer.token_to_id["a"],
      hint="3 specials come first; then count the corpus characters that sort before 'a'.")

# %% [markdown]
# ### Exercise 2: the unigram baseline's accuracy, by hand
#
# The unigram baseline predicts the same distribution everywhere. Compute its top-1 accuracy on
# the frozen validation set from `valid.batch.labels` alone (the labels are −100 at positions that
# are not scored), without calling any baseline function.

# %% tags=["exercise"]
# BEGIN SOLUTION
scored = valid.batch.labels[valid.batch.labels != sm.IGNORE_INDEX]
answer_2 = (scored == int(unigram.argmax())).float().mean().item()
# END SOLUTION

# %%
check("Exercise 2", answer_2, frozen.overall.top1, tolerance=1e-6,
      hint="its top-1 guess is always the most frequent training character; how often is that the label?")

# %% [markdown]
# ### Exercise 3: how much of the text has training seen?
#
# After `k` batches of `BATCH_SIZE` random windows, what fraction of the training split's characters
# has *never* been inside a window? Derive it for `k = 500` (each window covers a given position with
# probability about `SEQ_LEN / len(train_ids)`, and the windows are independent), then compare with
# the measurement below. This is also the curve behind the leak of section 2.

# %% tags=["exercise"]
# BEGIN SOLUTION
k = 500
answer_3 = float((1 - SEQ_LEN / len(train_ids)) ** (k * BATCH_SIZE))
# END SOLUTION

# %%
starts = sm.random_windows(torch.arange(len(train_ids)), 500 * BATCH_SIZE, SEQ_LEN, torch.Generator().manual_seed(3))[:, 0]
never = 1 - covered_by(starts, SEQ_LEN, len(train_ids)).float().mean().item()
check("Exercise 3", answer_3, never, tolerance=0.005,
      hint="a position escapes one window with probability 1 - SEQ_LEN / N; it must escape all of them.")
