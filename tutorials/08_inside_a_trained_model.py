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
# # 08 · Inside a trained model
#
# Notebooks 01–07 built every piece of a BERT-style masked language model and trained one for a
# few minutes. This one opens up a model that has trained longer: the small demo run that ships
# with the package (the seed configuration, `d_model` 128, 6 layers, 8 heads, 32-character
# windows). We read what it predicts, how sure it is, where its attention goes, which characters
# it mixes up, and finally turn the fill-in-the-blank model into a (slow, modest) text generator.
#
# **Learning objectives**
#
# - Load a trained run with `sm.load_run`, read its `metrics.jsonl`, and re-score it on the frozen
#   validation set against the unigram and bigram baselines recorded beside it.
# - Read coloured samples and fill-mask top-5 distributions, and explain why two `[MASK]`s filled
#   in one forward pass are predicted *independently* of each other.
# - Pull the attention weights out of every layer and head (`return_attention=True`), and tell
#   positional heads (a fixed neighbour) from content heads (spread over the window).
# - Build a character confusion matrix at `[MASK]` positions and explain why vowels are confused
#   with vowels.
# - Write iterative unmasking (Mask-Predict style) and measure what it improves over filling all
#   masks at once, and what it does not.
#
# Runs in about 15 s on 2 CPU cores; `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import copy
import html
import math
import re
from collections import Counter

import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display

import scratchmlm as sm
from scratchmlm.harness.build import RunData
from scratchmlm.masking import MASKED
from scratchmlm.classroom.notebook import FAST, check, demo_run_dir, show_source, use_threads
from scratchmlm.harness.run_dir import read_metrics
from scratchmlm.sample import validation_prompts, visible

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

torch.set_printoptions(precision=3, sci_mode=False)

NUM_SAMPLES = 4 if FAST else 8              # validation lines shown as coloured samples
ATTENTION_WINDOWS = 64 if FAST else 512     # validation windows averaged for the head profiles
UNMASK_WINDOWS = 64 if FAST else 256        # validation windows filled by iterative unmasking
ABLATION_WINDOWS = 128 if FAST else 256     # validation windows scored with heads switched off

# %% [markdown]
# ## 1. The run: what it is and how good it is
#
# A run directory holds the configuration, the tokenizer, the metrics log and the weights.
# `sm.load_run` rebuilds the model from `config.json`, loads the weights of the best checkpoint
# (the lowest validation loss) and returns it in eval mode, with dropout off.

# %%
model, tokenizer, config, state = sm.load_run(demo_run_dir(), device="cpu")
print(config.model)
print(f"{model.num_parameters():,} parameters, vocabulary of {tokenizer.vocab_size} "
      f"({len(tokenizer.special_ids)} specials); weights of step {state['step']:,}")

# %% [markdown]
# The metrics log has one JSON record per line: the two baselines (scored once, before training),
# a `train` record every `log_every` steps, an `eval` record every `eval_every` steps. The best
# checkpoint is the `eval` record with the lowest loss.

# %%
records = read_metrics(demo_run_dir() / "metrics.jsonl")
print(Counter(r["type"] for r in records))
best = min((r for r in records if r["type"] == "eval"), key=lambda r: r["loss"])
baselines = {r["name"]: r for r in records if r["type"] == "baseline"}
rows = [("model", best)] + [(f"{name} baseline", record) for name, record in baselines.items()]
print(f"{'':>17} {'top-1':>7} {'top-5':>7} {'CE':>6}  {'[MASK] top-1':>12}")
for name, record in rows:
    print(f"{name:>17} {record['top1']:7.3f} {record['top5']:7.3f} {record['loss']:6.3f}  "
          f"{record['by_kind']['mask']['top1']:12.3f}")
last_step = max(r["step"] for r in records if r["type"] == "train")
print(f"trained for {last_step:,} steps of {config.train.batch_size} windows; "
      f"best evaluation at step {best['step']:,}, the checkpoint we loaded is of step {state['step']:,}")

# %% [markdown]
# Numbers in a log are claims; re-score the weights ourselves. `RunData.prepare` rebuilds the
# frozen validation set from the configuration (same split, same windows, same masks), and its
# sha256 fingerprint must equal the one recorded with the evaluation.

# %%
data = RunData.prepare(config.train, tokenizer=tokenizer)
result = sm.evaluate(model, data.valid)
print(result.summary())
print("same validation set as the log:", data.valid.fingerprint == best["fingerprint"])
MASK_TOP1 = result.by_kind["mask"].top1
print(f"[MASK] top-1: re-scored {MASK_TOP1:.4f}, logged {best['by_kind']['mask']['top1']:.4f}")

# %% [markdown]
# > **Why judge it on the `[MASK]` column, against the bigram baseline?** At a `[MASK]` the
# > model sees nothing of the answer, so its accuracy there measures infilling from context alone
# > (notebook 07: the "unchanged" column flatters, since the answer is in the input). The bigram
# > infill baseline uses exactly one neighbour on each side; a transformer that only beats the
# > unigram has learned character frequencies, one that clearly beats the bigram uses wider
# > context. Every number above is on the same frozen masks, which the fingerprint proves.

# %% [markdown]
# ## 2. Coloured samples
#
# `sm.fill_prompts` masks each prompt, predicts every masked position in one forward pass and
# returns a `Samples` object; in a notebook it renders itself as HTML: context in grey, right
# fills on green, wrong fills on red with the expected character after them (hover for it, too).
# The prompts are lines of the *validation* text, cut to the model's 32 characters.
#
# We pass our own masker with `mask_token_prob=1.0`: every selected position becomes `[MASK]`,
# so every coloured character is a real test.

# %%
rng = torch.Generator().manual_seed(0)
prompts = validation_prompts(data.valid_text, NUM_SAMPLES, model.max_len, rng)
every_fill_a_mask = sm.BertMasker.for_tokenizer(tokenizer, select_prob=0.2, mask_token_prob=1.0,
                                                random_token_prob=0.0)
samples = sm.fill_prompts(model, tokenizer, prompts, every_fill_a_mask, rng)
display(samples)
print(samples.to_plain().splitlines()[0], "  <- the same first line as plain text: p[e] = wrong")

# %% [markdown]
# Look at *which* fills go wrong, and with what. A wrong fill is usually a plausible character
# for its place (a vowel for a vowel, a letter that makes a word-like string), not noise;
# section 5 measures that on thousands of positions.
#
# > **Why show samples at all, when we have accuracy?** One number hides the kind of error. A
# > model at 55% that errs on plausible vowels and one at 55% that outputs `e` whenever unsure are
# > very different; samples show which one you have in a few seconds. They must come from the
# > validation text: on training lines a model can recite what it memorised.

# %% [markdown]
# ## 3. Fill-mask: the model's distribution, not just its guess
#
# `sm.fill_mask` is the fill-mask pipeline: for each `[MASK]` in a text, the top-k real
# characters with their probabilities (specials get probability 0 and the rest is renormalised).

# %%
show_source(sm.fill_mask)

# %% [markdown]
# Some famous lines of Tiny Shakespeare, each with one letter masked, and one with two masks
# side by side. The model reads at most 32 characters, so each prompt is a short cut.

# %%
FAMOUS = ["Now is the w[MASK]nter of our",
          "A horse! a horse! my k[MASK]ngdom",
          "What's in a n[MASK]me? that which",
          "But, soft! what l[MASK]ght through",
          "A plague o' both your h[MASK]uses!"]
TWO_MASKS = "my kingdom for a h[MASK][MASK]se!"
famous = {prompt: sm.fill_mask(model, tokenizer, prompt, top_k=5)[0] for prompt in FAMOUS}
two = sm.fill_mask(model, tokenizer, TWO_MASKS, top_k=5)
for prompt, prediction in famous.items():
    print(f"{prompt:36s} -> {prediction.candidates[0].sequence}")
train_text = sm.split_text(sm.load_text(config.train.data)).train
print("every prompt's text before its first [MASK] occurs in the training split:",
      all(prompt.split("[MASK]")[0] in train_text for prompt in FAMOUS + [TWO_MASKS]))


# %% tags=["figure"]
def bars(ax, prediction, title):
    """Horizontal bars of one MaskPrediction's candidates, the most probable on top."""
    tokens = [repr(visible(c.token)) for c in prediction.candidates][::-1]
    scores = [c.score for c in prediction.candidates][::-1]
    ax.barh(tokens, scores, color="tab:blue")
    for y, score in enumerate(scores):
        ax.text(score + 0.01, y, f"{score:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("probability")
    ax.set_ylabel("candidate")
    ax.set_title(title, fontsize=9)


fig, axes = plt.subplots(2, 4, figsize=(15, 6))
for ax, (prompt, prediction) in zip(axes.flat, famous.items()):
    bars(ax, prediction, prompt.replace("[MASK]", "_"))
for number, (ax, prediction) in enumerate(zip(axes.flat[len(famous):], two), 1):
    title = f"{TWO_MASKS.replace('[MASK]', '_')}\nmask {number} of 2 (position {prediction.position})"
    bars(ax, prediction, title)
axes.flat[-1].axis("off")
fig.suptitle("Fill-mask: the top-5 characters at each [MASK]")
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the bars for two patterns. Where only one letter makes a word of the frame around it, the
# top bar is long; where several vowels make a word-shaped string (`w_nter`, `n_me`), the
# probability goes to the vowels, and the top-1 can be a wrong vowel with the answer second or
# third (what top-5 accuracy counts), sometimes even a confidently wrong one: a small model knows
# the shape of English words better than the words themselves.
#
# The two-mask prompt shows a limit of one forward pass. Each `[MASK]` is predicted seeing the
# other as `[MASK]`: the model gives the marginal distribution of each position, not their joint
# distribution, so the two top-1 choices need not make a word together. Fix the more confident
# one and ask again, and the other is predicted *given* it:

# %%
first, second = two
sure, unsure = sorted(two, key=lambda p: -p.candidates[0].score)
print("both at once :", TWO_MASKS, "->",
      TWO_MASKS.replace("[MASK]", first.candidates[0].token, 1).replace("[MASK]", second.candidates[0].token, 1))
fixed = sure.candidates[0].sequence                 # the text with the surer mask filled
again = sm.fill_mask(model, tokenizer, fixed, top_k=3)[0]
print(f"fix position {sure.position} first:", fixed, "->", again.candidates[0].sequence)
print(f"position {unsure.position} before:", [(c.token, round(c.score, 2)) for c in unsure.candidates[:3]],
      " after:", [(c.token, round(c.score, 2)) for c in again.candidates])

# %% [markdown]
# Section 6 turns this "fix the surest, ask again" into an algorithm.
#
# > **Why are famous lines a demonstration and not a test?** All of them lie in the training
# > split (the first 90% of the text), so the model may have memorised them. They make the
# > distributions easy to read because we know the answer; the honest scores are the
# > validation numbers of section 1.

# %% [markdown]
# ## 4. Where attention goes
#
# `model(ids, return_attention=True)` also returns one tensor of attention weights per layer,
# `[batch, heads, seq, seq]`: row `i` of a head's map is how query position `i` spreads its
# attention over the key positions (each row sums to 1). Here are all 6 × 8 maps for one prompt
# with one `[MASK]`; the red box marks the masked position's row, the one that must gather the
# evidence for the prediction.

# %%
ATTENTION_PROMPT = "What's in a name? that wh[MASK]ch we"
ids = tokenizer.encode(ATTENTION_PROMPT)                                 # [seq]
mask_at = int((ids == tokenizer.mask_id).nonzero())
with torch.no_grad():
    # logits [1, seq, vocab]; attention: one [1, heads, seq, seq] per layer
    logits, attention = model(ids[None], return_attention=True)
scores = logits[0, mask_at].clone()                                      # [vocab]
scores[list(tokenizer.special_ids)] = float("-inf")
print(f"{len(attention)} layers, each {list(attention[0].shape)}; [MASK] at position {mask_at}; "
      f"the model fills {tokenizer.vocab[int(scores.argmax())]!r}")
print("rows sum to 1:", torch.allclose(attention[3].sum(-1), torch.ones(1)))

# %% tags=["figure"]
num_layers, num_heads, seq = len(attention), attention[0].shape[1], len(ids)
fig, axes = plt.subplots(num_layers, num_heads, figsize=(16, 12.5))
for layer in range(num_layers):
    for head in range(num_heads):
        ax = axes[layer, head]
        ax.imshow(attention[layer][0, head], cmap="viridis", vmin=0, vmax=1)
        ax.add_patch(plt.Rectangle((-0.5, mask_at - 0.5), seq, 1, fill=False, edgecolor="red", linewidth=1.2))
        ax.set_xticks([])
        ax.set_yticks([])
        if layer == num_layers - 1:
            ax.set_xlabel(f"head {head}\nkey position")
        if head == 0:
            ax.set_ylabel(f"layer {layer}\nquery position")
fig.suptitle(f"Attention weights of every layer and head for {ATTENTION_PROMPT!r}\n"
             f"(red box: the row of the [MASK] at position {mask_at}; colour 0 → 1)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The small maps show a pattern at a glance: typically several layer-0 maps are a single bright
# diagonal just above or below the main one (every position looks one or two characters to its
# right or left), while upper-layer maps are vertical stripes or diffuse. Zoom in on the masked
# row, with the characters as labels:

# %% tags=["figure"]
labels = [visible(tokenizer.vocab[i]) if i != tokenizer.mask_id else "[M]" for i in ids.tolist()]
fig, axes = plt.subplots(2, 3, figsize=(16, 7), layout="constrained")
for layer, ax in enumerate(axes.flat):
    image = ax.imshow(attention[layer][0, :, mask_at, :], cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(seq), labels, fontsize=7)
    ax.get_xticklabels()[mask_at].set_color("red")
    ax.set_yticks(range(num_heads))
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("head")
    ax.set_title(f"layer {layer}: where the [MASK] at {mask_at} looks")
fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
plt.show()

# %% [markdown]
# One prompt is an anecdote. Average over many validation windows, and summarise each head by
# the mean weight a query puts on the key at each relative offset `k − i` (−1: the left
# neighbour, +1: the right one):

# %%
windows = data.valid.batch.inputs[:ATTENTION_WINDOWS]                      # [n, seq]
with torch.no_grad():
    _, maps = model(windows, return_attention=True)
maps = torch.stack(maps, dim=1).mean(0)                                    # [layers, heads, seq, seq]
OFFSETS = range(-4, 5)
width = windows.shape[1]                                                   # 32, the window length
offset = torch.arange(width)[None, :] - torch.arange(width)[:, None]      # [seq, seq], key − query
profile = torch.stack([maps[..., offset == k].mean(-1) for k in OFFSETS], dim=-1)   # [layers, heads, offsets]
entropy = -(maps.clamp_min(1e-12).log() * maps).sum(-1).mean(-1)           # [layers, heads], nats
for layer in range(num_layers):
    cells = []
    for head in range(num_heads):
        k = int(profile[layer, head].argmax())
        cells.append(f"{OFFSETS[k]:+d}:{profile[layer, head, k]:.2f}")
    print(f"layer {layer}: favourite offset:weight  " + "  ".join(cells)
          + f"   | mean entropy {entropy[layer].mean():.2f} nats")
print(f"(uniform attention over {width} keys has entropy {math.log(width):.2f} nats)")

# %% tags=["figure"]
fig, ax = plt.subplots(figsize=(9, 8))
image = ax.imshow(profile.reshape(num_layers * num_heads, len(OFFSETS)), cmap="magma", aspect="auto")
ax.set_xticks(range(len(OFFSETS)), [f"{k:+d}" for k in OFFSETS])
ax.set_yticks([layer * num_heads + (num_heads - 1) / 2 for layer in range(num_layers)],
              [f"layer {layer}" for layer in range(num_layers)])
for layer in range(1, num_layers):
    ax.axhline(layer * num_heads - 0.5, color="white", linewidth=0.8)
ax.set_xlabel("relative offset of the key (key − query)")
ax.set_ylabel("head (8 rows per layer)")
ax.set_title(f"Mean attention weight by relative offset, {ATTENTION_WINDOWS} validation windows")
fig.colorbar(image, ax=ax, label="mean attention weight")
plt.show()

# %% [markdown]
# Two kinds of heads appear. **Positional heads**, mostly in the first layers, put most of
# their weight on one fixed offset: the left neighbour, the right neighbour, two to the left.
# Together they copy each character's neighbourhood into its vector, which is a learned version
# of the bigram baseline's evidence (and at a `[MASK]` the only evidence there is). **Content
# heads**, higher up, have high entropy and no favourite offset: they look wherever the content
# is useful (the rest of the word, the start of the line), combining the features the lower
# layers built. Attention maps show where information *can* flow, not what the prediction needs;
# exercise 2 tests that by switching heads off.
#
# > **Why can a head learn "look one to the left" at all?** Attention by itself is blind to order
# > (notebook 04). The sinusoidal position vectors make "one step to the left" a fixed rotation,
# > so one pair of query and key projections can express it for every position at once. With no
# > recurrence and no convolution, these positional heads are how the model builds local n-gram
# > features in its first layer.

# %% [markdown]
# ## 5. Which characters does it confuse?
#
# Score the `[MASK]` positions of the frozen validation set (the `MASKED` kind only; random and
# unchanged positions show the model an input character and would muddle the picture), and count
# (true character, predicted character) pairs.

# %%
batch = data.valid.batch                                                   # the whole frozen set
with torch.no_grad():
    logits = model(batch.inputs)                                           # [n, seq, vocab]
logits[..., list(tokenizer.special_ids)] = float("-inf")                   # answers are real characters
probs = logits.softmax(-1)                                                 # [n, seq, vocab]
at_mask = batch.kinds == MASKED                                            # [n, seq]
truth = batch.labels[at_mask]                                              # [m]
guess = probs[at_mask].argmax(-1)                                          # [m]
print(f"{len(truth)} [MASK] positions in {len(batch.inputs)} windows; top-1 {(guess == truth).float().mean():.3f}")

V = tokenizer.vocab_size
counts = torch.bincount(truth * V + guess, minlength=V * V).view(V, V)    # [true, predicted]
TOP = 20
frequent = counts.sum(1).argsort(descending=True)[:TOP]                    # the 20 most frequent true characters
rates = counts[frequent][:, frequent].float() / counts[frequent].sum(1, keepdim=True)
errors = counts[frequent][:, frequent].float().fill_diagonal_(float("nan"))
names = [visible(tokenizer.vocab[i]) for i in frequent.tolist()]

# %% tags=["figure"]
fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
panels = [(rates, "P(predicted | true), diagonal = accuracy", "fraction of that row", "Blues"),
          (errors, "error counts only (diagonal blanked)", "count", "Reds")]
for ax, (matrix, title, unit, cmap) in zip(axes, panels):
    image = ax.imshow(matrix, cmap=cmap)
    ax.set_xticks(range(TOP), names)
    ax.set_yticks(range(TOP), names)
    ax.set_xlabel("predicted character")
    ax.set_ylabel("true character")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8, label=unit)
fig.suptitle(f"Confusions at [MASK] positions: the {TOP} most frequent characters (␣ = space, ⏎ = newline)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The most frequent mistakes, and what share of them stay within a class of characters:

# %%
VOWELS = set("aeiouAEIOU")


def kind_of(char):
    if char in VOWELS:
        return "vowel"
    if char.isalpha():
        return "consonant"
    return "space" if char in " \n" else "punctuation"


wrong = counts.clone().fill_diagonal_(0)
top_pairs = wrong.flatten().argsort(descending=True)[:12]
print("most frequent confusions (true -> predicted):")
pair_names = [f"{visible(tokenizer.vocab[int(p) // V])}→{visible(tokenizer.vocab[int(p) % V])}" for p in top_pairs]
print("  ".join(f"{name} {int(wrong.flatten()[p])}" for name, p in zip(pair_names, top_pairs)))
by_class = Counter()
for true_id, guess_id in zip(truth[truth != guess].tolist(), guess[truth != guess].tolist()):
    by_class[kind_of(tokenizer.vocab[true_id]), kind_of(tokenizer.vocab[guess_id])] += 1
for kind in ("vowel", "consonant", "space", "punctuation"):
    total = sum(n for (t, _), n in by_class.items() if t == kind)
    if total:
        shares = ", ".join(f"{g} {by_class[kind, g] / total:.0%}"
                           for g in ("vowel", "consonant", "space", "punctuation"))
        print(f"a wrong guess for a {kind:11s} ({total:4d} errors) is a {shares}")

# %% [markdown]
# The errors have structure. A masked vowel is mostly mistaken for another vowel: the consonants
# around it fix the *shape* of the word (consonant–vowel–consonant) but several vowels fit that
# shape, and choosing among them needs the word itself, which a 32-character window and a small
# model only sometimes pin down. Consonants are mostly confused with consonants that can stand in
# the same cluster. A model that had learned nothing would confuse everything with `␣` and `e`,
# the unigram's favourites.
#
# > **Why count confusions on the frozen set rather than on samples?** The same masks, the same
# > windows as the scores of section 1, a few thousand positions instead of a handful, and
# > nothing chosen by us: a confusion matrix from hand-picked prompts shows what we looked for.

# %% [markdown]
# ## 6. Generating text by iterative unmasking
#
# An MLM is not trained to write left to right, but it can fill blanks, so it can *generate* by
# filling many blanks. Filling them all at once (one forward pass, section 3's two-mask problem
# times ten) predicts every position as if all the others were still unknown. Mask-Predict
# (Ghazvininejad et al., 2019) does it over several rounds instead:
#
# 1. predict every masked position;
# 2. keep the `k` most confident predictions, write them into the text;
# 3. leave the rest masked and repeat, now with more context, until nothing is masked.
#
# With `R` rounds, each round reveals `ceil(remaining / rounds left)` positions, so the last round
# reveals all that remain; `R = 1` is filling all at once. This is the lesson's own algorithm (it
# is not in the package); it works on a batch of lines at once.

# %%
@torch.no_grad()
def iterative_unmask(model, ids, masked, rounds, tokenizer):
    """Fill the ``masked`` positions of ``ids`` over ``rounds`` rounds, most confident first.

    ids ``[batch, seq]`` (the original text; masked positions are overwritten), masked
    ``[batch, seq]`` bool. Returns the filled ids ``[batch, seq]`` and, per round, the
    ``(ids, revealed)`` after it (for display).
    """
    ids = ids.masked_fill(masked, tokenizer.mask_id)                   # [batch, seq]: the blanks as [MASK]
    masked = masked.clone()                                            # [batch, seq]: still to fill
    history = []
    for round_ in range(rounds):
        logits = model(ids)                                            # [batch, seq, vocab]
        logits[..., list(tokenizer.special_ids)] = float("-inf")       # fill with real characters only
        confidence, prediction = logits.softmax(-1).max(-1)            # [batch, seq] each
        confidence = confidence.masked_fill(~masked, -1.0)             # filled positions never compete
        keep = torch.ceil(masked.sum(1) / (rounds - round_)).long()    # [batch]: how many to reveal now
        rank = confidence.argsort(1, descending=True).argsort(1)       # [batch, seq]: 0 = most confident
        revealed = masked & (rank < keep[:, None])                     # [batch, seq]: the top-k of each row
        ids = torch.where(revealed, prediction, ids)                   # write them in
        masked &= ~revealed                                            # the rest stay [MASK]
        history.append((ids.clone(), revealed))
    return ids, history


def mask_fraction(shape, fraction, rng):
    """A bool mask ``[batch, seq]`` with exactly round(fraction · seq) random positions per row."""
    batch, seq = shape
    order = torch.rand(shape, generator=rng).argsort(1)                # [batch, seq]: a random permutation per row
    return torch.zeros(shape, dtype=torch.bool).scatter_(1, order[:, :round(fraction * seq)], True)


# %% [markdown]
# Watch it on one validation line with 40% of its characters masked, over 5 rounds. Grey: given
# context; `▒`: still masked; bold: revealed in this round; green/red: right/wrong against the
# original line (shown last).

# %%
FRACTION, ROUNDS = 0.4, 5
rng = torch.Generator().manual_seed(1)
line = validation_prompts(data.valid_text, 1, model.max_len, rng)[0]
line_ids = tokenizer.encode(line)[None]                                # [1, seq]
blanks = mask_fraction(line_ids.shape, FRACTION, rng)                  # [1, seq]
_, history = iterative_unmask(model, line_ids, blanks, ROUNDS, tokenizer)
at_once, _ = iterative_unmask(model, line_ids, blanks, 1, tokenizer)


def render(ids, revealed_now, still_masked):
    """One line as HTML: context grey, masked ▒, fills coloured by correctness, new ones bold."""
    parts = []
    for i, (token, true) in enumerate(zip(ids[0].tolist(), line_ids[0].tolist())):
        char = html.escape(visible(tokenizer.vocab[token]) if token != tokenizer.mask_id else "▒")
        if not blanks[0, i]:
            style = "color:#888"
        elif still_masked[i]:
            style = "color:#555"
        else:
            style = f"color:white;background:{'#2e7d32' if token == true else '#c62828'}"
            if revealed_now[i]:
                style += ";font-weight:bold;text-decoration:underline"
        parts.append(f'<span style="{style}">{char}</span>')
    return "".join(parts)


still = blanks[0].clone()
rows = [f"masked   {render(line_ids.masked_fill(blanks, tokenizer.mask_id), torch.zeros_like(still), still)}"]
for number, (ids_after, revealed) in enumerate(history, 1):
    still &= ~revealed[0]
    rows.append(f"round {number}  {render(ids_after, revealed[0], still)}")
rows.append(f"at once  {render(at_once, blanks[0], torch.zeros_like(still))}")
rows.append(f'original <span style="color:#888">{html.escape("".join(visible(c) for c in line))}</span>')
display(HTML('<div style="font-family:monospace;white-space:pre;line-height:1.7">' + "<br>".join(rows) + "</div>"))
for name, filled in (("iterative", history[-1][0]), ("at once", at_once)):
    print(f"{name:>9}: {int((filled[blanks] == line_ids[blanks]).sum())}/{int(blanks.sum())} blanks right")

# %% [markdown]
# One line proves little. Fill the same blanks (40% of each window) in many validation windows
# with 1 (all at once), 2, 4 and 13 rounds (one character per round), and score two things:
# the share of blanks filled with the original character, and the share of *words* containing a
# fill that are real words, i.e. occur somewhere in the training text. (Not every word of the
# validation text occurs in the training text, so even the original line scores below 1; it is
# drawn as the dashed line.)

# %%
known_words = set(re.findall(r"[A-Za-z']+", train_text))


def real_word_share(filled, blanks):
    """Of the words (inside the window, not cut by its edges) that hold a fill, the share that are known words."""
    real = total = 0
    for row, holes in zip(filled.tolist(), blanks.tolist()):
        for word in re.finditer(r"[A-Za-z']+", tokenizer.decode(row)):
            start, end = word.span()
            if start > 0 and end < len(row) and any(holes[start:end]):
                total += 1
                real += word.group() in known_words
    return real / total


originals = data.valid.originals[:UNMASK_WINDOWS]                      # [n, seq]: unmasked validation windows
rng = torch.Generator().manual_seed(2)
blanks = mask_fraction(originals.shape, FRACTION, rng)                 # [n, seq]
ROUND_COUNTS = [1, 2, 4, int(blanks[0].sum())]
char_accuracy, word_share = [], []
for rounds in ROUND_COUNTS:
    filled, _ = iterative_unmask(model, originals, blanks, rounds, tokenizer)
    char_accuracy.append((filled[blanks] == originals[blanks]).float().mean().item())
    word_share.append(real_word_share(filled, blanks))
    print(f"{rounds:2d} rounds: characters right {char_accuracy[-1]:.3f}   real words {word_share[-1]:.3f}")
ceiling = real_word_share(originals, blanks)                           # the same words, unmasked
print(f"the original text: real words {ceiling:.3f} "
      f"(below 1: some validation words never occur in the training text)")

# %% tags=["figure"]
fig, ax = plt.subplots(figsize=(7.5, 4.5))
ax.plot(ROUND_COUNTS, char_accuracy, "o-", label="blanks filled with the original character")
ax.plot(ROUND_COUNTS, word_share, "s-", label="words with a fill that are real words")
ax.axhline(ceiling, color="tab:orange", linestyle="--", linewidth=1, label="real words in the original text")
ax.set_xscale("log", base=2)
ax.set_xticks(ROUND_COUNTS, [str(r) for r in ROUND_COUNTS])
ax.set_ylim(0, 1)
ax.set_xlabel("rounds (1 = all at once; the last = one character per round)")
ax.set_ylabel("share")
ax.set_title(f"Iterative unmasking, {int(FRACTION * 100)}% masked, {UNMASK_WINDOWS} validation windows")
ax.legend()
ax.grid(True, alpha=0.3)
plt.show()

# %% [markdown]
# The two curves tell different stories. Per character, more rounds hardly help: most blanks are
# decided by their visible neighbours, and the original line is only one of many a model could
# fill in. But the *words* get more coherent: filled all at once, two neighbouring blanks are
# chosen independently and can clash (section 3's two-mask prompt); filled one round after
# another, each choice is conditioned on the ones before it, and the result is more often a
# real word.
# Generation wants coherent text, not a particular text, so this is the improvement that matters.
# The price is `R` forward passes instead of one.
#
# > **Why reveal the most confident predictions first?** A confident prediction is more often
# > right (exercise 1 checks how well this model's confidence matches its accuracy), so it is the
# > safest context to add; the hard positions wait until their neighbours are known. Mask-Predict
# > goes one step further and may re-mask an already filled position that has become unlikely;
# > ours keeps every fill, which is simpler and already shows the effect.
#
# > **Why is this still not a good text generator?** Every round conditions on the whole window at
# > once, but the model was trained with only 15% of positions masked, not 40% or 100%: a window
# > that is mostly `[MASK]` is far from anything it saw in training. Masked-diffusion language
# > models train on every masking rate for exactly this reason.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: does the model know when it is right?
#
# Iterative unmasking trusts the model's confidence. Compute the model's mean confidence at the
# `[MASK]` positions of the frozen validation set: the mean, over those positions, of the largest
# probability of each softmax over the real characters (section 5's `probs` and `at_mask` are
# still there). Store it as `answer_1`. Before running it: if its confidence were honest
# ("calibrated"), which number of section 1 should it be close to? The check compares it with
# that number, within 0.07.

# %% tags=["exercise"]
# BEGIN SOLUTION
answer_1 = probs[at_mask].max(-1).values.mean().item()             # probs[at_mask]: [m, vocab]
# END SOLUTION
print(f"mean confidence {answer_1:.3f}")

# %%
check("Exercise 1", answer_1, best["by_kind"]["mask"]["top1"], tolerance=0.07,
      hint="a calibrated model's mean top-1 probability is close to its top-1 accuracy at the same "
           "positions; average the largest probability over the MASKED positions of all windows")

# %% [markdown]
# Cross-entropy is minimised by predicting a probability of 0.6 for what happens 60% of the time,
# so a model trained with it comes out roughly calibrated on text like its training text (often a
# little over-confident: it was trained with dropout on and is used with it off). Its confidence
# is then a usable estimate of being right, which is what section 6 relies on.
#
# ### Exercise 2: switch heads off
#
# Section 4 found positional heads. Test what they are worth by removing them. Write
# `silence(model, layer, heads)` that returns a **copy** of `model` in which the listed heads of
# encoder layer `layer` contribute nothing, by changing **weights only**: zero the part of that
# layer's output projection `attention.out` that reads those heads. Which part? Look at how
# `MultiHeadAttention.forward` merges the heads before `self.out`:

# %%
show_source(sm.MultiHeadAttention.forward)


# %% tags=["exercise"]
def silence(model, layer, heads):
    # BEGIN SOLUTION
    quiet = copy.deepcopy(model)                                   # the original stays intact
    attention = quiet.encoder.layers[layer].attention
    with torch.no_grad():
        for head in heads:
            # merged = the heads side by side: head h is columns h·d_k .. (h+1)·d_k of out's input
            attention.out.weight[:, head * attention.d_k:(head + 1) * attention.d_k] = 0.0
    return quiet
    # END SOLUTION


# %% [markdown]
# The check silences some heads another way, with a forward pre-hook that zeroes their slice of
# the merged heads on its way into `out`, and compares the logits; it also checks that `model`
# itself was left alone.

# %%
TEST_LAYER, TEST_HEADS = 3, [0, 5, 6]
probe = data.valid.batch.inputs[:32]                                   # [32, seq]


def zero_heads_on_the_way_in(module, inputs):
    merged = inputs[0].clone()                                         # [batch, seq, d_model]
    d_k = merged.shape[-1] // num_heads
    for head in TEST_HEADS:
        merged[..., head * d_k:(head + 1) * d_k] = 0.0
    return (merged,)


with torch.no_grad():
    original = model(probe)
    hook = model.encoder.layers[TEST_LAYER].attention.out.register_forward_pre_hook(zero_heads_on_the_way_in)
    try:
        hooked = model(probe)
    finally:
        hook.remove()
    got = [silence(model, TEST_LAYER, TEST_HEADS)(probe), model(probe)]
check("Exercise 2", got, [hooked, original], tolerance=1e-4,
      hint="merged = heads.transpose(1, 2).reshape(batch, seq, d_model) puts head h in columns "
           "h*d_k:(h+1)*d_k of out's input; out.weight is [d_model_out, d_model_in], so zero "
           "out.weight[:, h*d_k:(h+1)*d_k] in a copy.deepcopy of the model")

# %% [markdown]
# Now use it. Predict before running: how much `[MASK]` accuracy is lost without the single
# strongest left-looking head of layer 0? Without all of layer 0's left-looking heads? Without
# all of layer 0, or all of the last layer?

# %%
b = data.valid.batch
scored_batch = sm.MaskedBatch(b.inputs[:ABLATION_WINDOWS], b.labels[:ABLATION_WINDOWS], b.kinds[:ABLATION_WINDOWS])
scored = sm.FrozenValidationSet(scored_batch, data.valid.originals[:ABLATION_WINDOWS],
                                sm.fingerprint(scored_batch))            # the first windows of the frozen set
favourite = [OFFSETS[int(profile[0, head].argmax())] for head in range(num_heads)]
strongest_left = int(profile[0, :, list(OFFSETS).index(-1)].argmax())
left_heads = [head for head in range(num_heads) if favourite[head] < 0]
right_heads = [head for head in range(num_heads) if favourite[head] > 0]
experiments = {"nothing": (0, []),
               f"layer 0, head {strongest_left} (looks most at the left neighbour)": (0, [strongest_left]),
               "layer 0, every head whose favourite offset is left": (0, left_heads),
               "layer 0, every head whose favourite offset is right": (0, right_heads),
               "all of layer 0": (0, list(range(num_heads))),
               f"all of layer {num_layers - 1}": (num_layers - 1, list(range(num_heads)))}
for name, (layer, heads) in experiments.items():
    top1 = sm.evaluate(silence(model, layer, heads), scored).by_kind["mask"].top1
    print(f"silenced {name:55s} heads {str(heads):26s} [MASK] top-1 {top1:.3f}")
print(f"(unigram baseline {baselines['unigram']['by_kind']['mask']['top1']:.3f}, "
      f"bigram {baselines['bigram']['by_kind']['mask']['top1']:.3f}, on all {len(data.valid)} windows)")

# %% [markdown]
# Attention maps alone would have suggested that each positional head matters. Switching them
# off tells a more careful story: a single head is usually redundant (other heads of the layer
# also carry the neighbour, and later layers can look there too), while removing a whole group,
# or the whole first layer that builds the local features everything else reads, costs far more
# than removing a layer at the top. This is the ablation habit of interpretability work: a
# picture of attention is a hypothesis, and switching the part off is the test.
