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
# # 03 · Attention from scratch
#
# Attention is the one operation in a transformer that moves information *between* positions:
# everything else (embeddings, feed-forward, LayerNorm, the generator) works on each position
# alone. This notebook opens `sm.MultiHeadAttention` and follows one batch of characters through
# it, tensor by tensor.
#
# **Learning objectives**
#
# - Read queries, keys and values out of the module's single fused `qkv` layer and trace their
#   shapes from `[batch, seq, d_model]` to `[batch, heads, seq, d_k]` and back.
# - Explain, with a measurement, why the scores are divided by √d_k: without it the softmax
#   saturates as d_k grows and its gradient vanishes.
# - Apply a padding mask *before* the softmax, and show what goes wrong when it is applied after
#   (rows no longer sum to 1, and the padding still changes the real positions' outputs).
# - Check the written-out module against `F.scaled_dot_product_attention` and the module's own
#   `fused=True` path within a stated tolerance.
# - Split a tensor into heads and merge it back (`view`/`permute`, `transpose`/`reshape`), and say
#   what several heads buy over one head of the same width.
#
# Runs in about 5 s on 2 CPU cores; `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import scratchmlm as sm
from scratchmlm.classroom.notebook import FAST, check, show_source, use_threads
from scratchmlm.sample import visible

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

torch.set_printoptions(precision=3, sci_mode=False)
torch.set_grad_enabled(False)          # this notebook looks inside tensors; it trains nothing

# %% [markdown]
# ## 1. The module, as written
#
# The whole of multi-head attention is the formula in the module's docstring and twenty lines of
# `forward`. Read them once now; the rest of the notebook takes them apart.

# %%
show_source(sm.MultiHeadAttention.forward)

# %% [markdown]
# ## 2. A batch of characters to attend over
#
# Two short lines of the corpus, of different lengths, become one `[batch, seq]` tensor: the
# shorter one is filled up with `[PAD]` (id 0). `sm.Embeddings` (notebook 04 opens it) turns the
# ids into vectors `[batch, seq, d_model]`. We use a small attention layer, `d_model = 64` with
# 4 heads, so that every tensor fits on screen. Dropout is 0 here, so every output is deterministic.

# %%
text = sm.load_text("tinyshakespeare")
tokenizer = sm.CharTokenizer.from_text(text)
lines = text.splitlines()
first, second = lines[4], lines[3]                 # "Speak, speak." and "All:"
seq = max(len(first), len(second))
ids = torch.full((2, seq), tokenizer.pad_id)
ids[0, :len(first)] = tokenizer.encode(first, parse_special=False)
ids[1, :len(second)] = tokenizer.encode(second, parse_special=False)
padding = ids == tokenizer.pad_id                  # [batch, seq], True = padding
chars = [[visible(tokenizer.vocab[i]) if i != tokenizer.pad_id else "·" for i in row] for row in ids.tolist()]
print(ids)
print(padding)

D_MODEL, HEADS = 64, 4
torch.manual_seed(0)
embed = sm.Embeddings(tokenizer.vocab_size, D_MODEL, max_len=32, dropout=0.0)
attention = sm.MultiHeadAttention(D_MODEL, HEADS, dropout=0.0).eval()
x = embed(ids)
print("x:", list(x.shape), "= [batch, seq, d_model]")

# %% [markdown]
# ## 3. Queries, keys and values from one fused layer
#
# Each position asks a question (its **query** q), advertises what it holds (its **key** k) and
# offers a payload (its **value** v). All three are linear maps of the same `x`:
# `Q = x W_q`, `K = x W_k`, `V = x W_v` (each plus a bias). The module stores the three weight matrices stacked as
# one `nn.Linear(d_model, 3·d_model)` called `qkv`: rows `0:d_model` of its weight are `W_q`,
# the next `d_model` rows `W_k`, the last `W_v`.

# %%
W = attention.qkv.weight                           # [3·d_model, d_model] (nn.Linear stores out × in)
b = attention.qkv.bias                             # [3·d_model]
W_q, W_k, W_v = W.split(D_MODEL, dim=0)            # each [d_model, d_model]
b_q, b_k, b_v = b.split(D_MODEL)
print("qkv.weight", list(W.shape), "-> W_q, W_k, W_v", [list(w.shape) for w in (W_q, W_k, W_v)])

Q = x @ W_q.T + b_q                                # [batch, seq, d_model], all heads side by side
K = x @ W_k.T + b_k
V = x @ W_v.T + b_v
fused_output = attention.qkv(x)                    # [batch, seq, 3·d_model]
print("qkv(x)", list(fused_output.shape), "= [Q | K | V] along the last axis:",
      torch.allclose(fused_output, torch.cat([Q, K, V], dim=-1), atol=1e-6))

# %% [markdown]
# > **Why one fused `qkv` layer instead of three?** It is the same arithmetic (three matrices
# > stacked are one matrix), but one `[d_model → 3·d_model]` matmul keeps the hardware busier than
# > three small ones, and the split into Q, K, V and into heads becomes a free `view`. The cell
# > above checks that nothing is lost: slicing the stacked weight gives back the three maps.

# %% [markdown]
# Now the module's one line that splits `qkv(x)` into Q, K, V *and* into heads, step by step.
# The last axis `3·d_model` is read as `[3, heads, d_k]`: which of Q/K/V, which head, which
# dimension inside the head. `permute` then brings "which of Q/K/V" to the front and puts the heads
# before the sequence, so that each head is an independent `[seq, d_k]` matrix.

# %%
batch, seq_len, _ = x.shape
d_k = attention.d_k
step1 = fused_output.view(batch, seq_len, 3, HEADS, d_k)
step2 = step1.permute(2, 0, 3, 1, 4)
q, k, v = step2
for name, tensor, meaning in [
        ("qkv(x)", fused_output, "[batch, seq, 3·d_model]"),
        (".view(batch, seq, 3, heads, d_k)", step1, "[batch, seq, 3, heads, d_k]"),
        (".permute(2, 0, 3, 1, 4)", step2, "[3, batch, heads, seq, d_k]"),
        ("q (and k, v)", q, "[batch, heads, seq, d_k]")]:
    print(f"{name:34s} {str(list(tensor.shape)):18s} {meaning}")

# head h of q is simply columns h·d_k : (h+1)·d_k of Q
h = 2
print("q[:, 2] is Q[..., 32:48]:", torch.allclose(q[:, h], Q[..., h * d_k:(h + 1) * d_k], atol=1e-6))
print("view/permute copied nothing (same storage):", q.data_ptr() == fused_output.data_ptr())

# %% [markdown]
# ## 4. Scores, and why they are divided by √d_k
#
# Query `i` scores key `j` by their dot product `q_i · k_j`; the softmax over `j` turns a row of
# scores into weights that sum to 1. If the entries of q and k have mean 0 and variance 1, the dot
# product is a sum of `d_k` terms of variance 1, so its **standard deviation is √d_k**. Wider heads
# mean wider score ranges, and a softmax of widely spread numbers is almost one-hot.
#
# The experiment below is plain torch, not the module: random unit-variance queries and keys
# (32 keys per row, like a training window), the softmax of each row with and without the
# `1/√d_k`, and three measurements per `d_k`: the largest weight in the row, the row's entropy
# (`log 32 ≈ 3.47` is uniform, 0 is one-hot), and the size of the softmax's Jacobian
# `J = diag(p) − p pᵀ`, which is what multiplies the gradient flowing back into the scores.

# %%
rng = torch.Generator().manual_seed(0)
ROWS, KEYS = (64, 32) if FAST else (256, 32)
d_ks = [2 ** e for e in range(0, 11)]
stats = {"unscaled": [], "scaled by 1/√d_k": []}
for dk in d_ks:
    qs = torch.randn(ROWS, 1, dk, generator=rng)
    ks = torch.randn(ROWS, KEYS, dk, generator=rng)
    raw = (qs * ks).sum(-1)                                     # [ROWS, KEYS], std ≈ √d_k
    for label, scores in (("unscaled", raw), ("scaled by 1/√d_k", raw / math.sqrt(dk))):
        p = scores.softmax(-1)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)
        sq = (p ** 2).sum(-1)
        jacobian = (sq - 2 * (p ** 3).sum(-1) + sq ** 2).clamp_min(0).sqrt()   # ‖diag(p) − ppᵀ‖_F
        stats[label].append((p.max(-1).values.mean().item(), entropy.mean().item(), jacobian.mean().item()))
dots = (torch.randn(4096, 64, generator=rng) * torch.randn(4096, 64, generator=rng)).sum(-1)
print(f"std of unscaled q·k at d_k = 64: {dots.std():.2f}  (√64 = 8)")

# %% tags=["figure"]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
titles = ["largest weight in a row", "entropy of a row (nats)", "‖softmax Jacobian‖ (gradient size)"]
for column, (axis, title) in enumerate(zip(axes, titles)):
    for label, marker in (("unscaled", "o-"), ("scaled by 1/√d_k", "s-")):
        axis.plot(d_ks, [s[column] for s in stats[label]], marker, label=label)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("d_k (dimensions per head)")
    axis.set_title(title)
axes[0].set_ylabel("mean over rows")
axes[1].axhline(math.log(KEYS), color="grey", ls=":", label=f"uniform: log {KEYS}")
axes[0].legend(); axes[1].legend()
fig.suptitle(f"Softmax of {KEYS} random scores q·k: saturation vs d_k")
fig.tight_layout()
plt.show()

# %% [markdown]
# > **Why scale by 1/√d_k?** Unscaled, the spread of the scores grows like √d_k, and so does
# > the peakiness of every row. Even at d_k = 16 (this package's heads: 128 / 8) an unscaled row
# > gives about two thirds of its mass to one key, picked by nothing but the random initial
# > weights. A moderate spread still passes gradient (the Jacobian even grows a little up to
# > d_k ≈ 8), but the spread keeps growing with the width: at d_k = 64 rows are nearly one-hot and
# > from there the Jacobian, which carries the gradient back to W_q and W_k, shrinks steadily. A
# > saturated softmax barely learns: moving a score changes almost nothing. Dividing by √d_k gives
# > the scores unit variance whatever the head width, so the scaled curves stay flat and the width
# > can be chosen for capacity alone.

# %%
for dk in (16, 64, 1024):
    (m_raw, _, j_raw), (m_scaled, _, j_scaled) = (stats[label][d_ks.index(dk)] for label in stats)
    print(f"d_k = {dk:4d}: largest weight {m_raw:.2f} unscaled vs {m_scaled:.2f} scaled; "
          f"Jacobian {j_raw:.3f} vs {j_scaled:.3f}")

# %% [markdown]
# ## 5. The padding mask: before the softmax, not after
#
# Padding positions are not text; no real position may take information from them. The module
# sets the scores of padding **keys** to the most negative float before the softmax, so that
# `exp` makes their weights exactly 0 and the remaining weights still sum to 1. Ask the module
# for its weights to see it:

# %%
out_masked, weights = attention(x, key_padding_mask=padding, return_weights=True)
print("weights:", list(weights.shape), "= [batch, heads, seq, seq]")
print("row sums, sequence 1, head 0:", weights[1, 0].sum(-1))
print("largest weight on a padding key:", weights[1, :, :, padding[1]].max().item())

# %% [markdown]
# A tempting shortcut is to run the softmax on all scores and zero the padding columns afterwards.
# Here it is, in plain torch from the module's own q and k:

# %%
scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)                 # [batch, heads, seq, seq]
after = scores.softmax(-1).masked_fill(padding[:, None, None, :], 0.0)
print("row sums when zeroing after the softmax, sequence 1, head 0:", after[1, 0].sum(-1))

# %% tags=["figure"]
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.7]})
labels = chars[1]
for axis, matrix, title in ((axes[0], weights[1, 0], "mask before softmax (the module)"),
                            (axes[1], after[1, 0], "softmax, then zero the padding")):
    image = axis.imshow(matrix, cmap="viridis", vmin=0, vmax=weights[1, 0].max().item())
    axis.set_xticks(range(seq_len), labels)
    axis.set_yticks(range(seq_len), labels)
    axis.set_xlabel("key (attended to)")
    axis.set_ylabel("query (attending)")
    axis.set_title(f"{title}\nsequence {second!r}, head 0")
    fig.colorbar(image, ax=axis, fraction=0.046)
axes[2].bar(range(seq_len), weights[1, 0].sum(-1), width=0.4, label="before: each row sums to 1")
axes[2].bar([i + 0.4 for i in range(seq_len)], after[1, 0].sum(-1), width=0.4,
            label="after: rows lose mass")
axes[2].set_xticks(range(seq_len), labels)
axes[2].set_xlabel("query")
axes[2].set_ylabel("sum of the row's weights")
axes[2].set_title("row sums")
axes[2].legend(loc="lower right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# (The rows of the padding *queries*, `·`, are computed too, but nothing ever reads them.)
# Both heat maps have dark padding columns, yet only the left one is right. On the right, the
# softmax's denominator still contained the padding keys, so each real row keeps only the share of
# mass its real keys happened to win: the rows sum to less than 1, by an amount that depends on
# how many pads the sequence has. Worse, the padding *still leaks*: the denominator depends on the
# padding keys, so changing what sits in the padded slots changes the outputs at the real
# positions. Put other characters where the pads are, keep the mask, and compare:

# %%
other_ids = ids.masked_fill(padding, tokenizer.encode("z", parse_special=False).item())
x_other = embed(other_ids)
q2, k2, v2 = attention.qkv(x_other).view(batch, seq_len, 3, HEADS, d_k).permute(2, 0, 3, 1, 4)
after_other = (q2 @ k2.transpose(-2, -1) / math.sqrt(d_k)).softmax(-1).masked_fill(padding[:, None, None, :], 0.0)
real = ~padding                                                  # real query positions
before_change = (attention(x_other, key_padding_mask=padding) - out_masked)[real].abs().max().item()
def merge_and_project(heads):          # [batch, heads, seq, d_k] -> [batch, seq, d_model]; section 7 explains it
    return attention.out(heads.transpose(1, 2).reshape(batch, seq_len, D_MODEL))


after_change = (merge_and_project(after_other @ v2) - merge_and_project(after @ v))[real].abs().max().item()
print(f"masked before the softmax: real outputs change by at most {before_change:.1e}")
print(f"zeroed after the softmax:  real outputs change by at most {after_change:.1e}")

# %% [markdown]
# > **Why mask before the softmax?** A weight of exactly 0 for a padding key, *and* a row that
# > still sums to 1, are both needed, and only masking the scores gives both: `exp(−huge) = 0`
# > removes the key from the numerator and the denominator at once. Zeroing afterwards fixes the
# > numerator only, so the padding content survives in the denominator (the leak measured above)
# > and the attention output shrinks for sequences with more padding.
#
# > **Why the most negative float and not −∞?** A query whose keys are *all* padding would get a
# > row of −∞, and `softmax` of that is `0/0 = NaN`, which then spreads through every later layer
# > and the loss. With `torch.finfo(dtype).min` that row is merely uniform (and it is a padding row
# > nobody reads). Plain torch shows the difference:

# %%
row = torch.zeros(4)
print("softmax of -inf row:      ", row.fill_(-math.inf).softmax(-1))
print("softmax of finfo.min row: ", row.fill_(torch.finfo(row.dtype).min).softmax(-1))

# %% [markdown]
# The training windows of this package are always full `seq_len` windows, so training never pads;
# the mask matters when prompts of different lengths share a batch.
#
# ## 6. The written-out module equals PyTorch's fused attention
#
# `F.scaled_dot_product_attention(q, k, v, attn_mask)` computes `softmax(q kᵀ/√d_k + mask) v` in
# one optimised kernel (its boolean `attn_mask` is True where attention is *allowed*, the opposite
# of our `key_padding_mask`). Feed it the module's own q, k, v, merge the heads, apply the module's
# output projection, and compare; then switch the module to its `fused=True` path, which makes that
# same call itself. The differences are float32 round-off, far below the tolerance we state.

# %%
TOLERANCE = 1e-5
reference_heads = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
reference = merge_and_project(reference_heads)
attention.fused = True
fused = attention(x, key_padding_mask=padding)
attention.fused = False
for name, other in (("F.scaled_dot_product_attention", reference), ("module with fused=True", fused)):
    difference = (out_masked - other).abs().max().item()
    print(f"written-out vs {name:31s} max |difference| = {difference:.1e}  (< {TOLERANCE:g}: {difference < TOLERANCE})")

# %% [markdown]
# > **Why keep a written-out path at all?** The fused kernel can be faster (on a GPU; on a CPU
# > with dropout the package finds it slower, see `TrainConfig.fused_attention`), but it is opaque
# > and does not return the weights, which notebook 08 plots. The written-out path is the definition; the fused
# > one is an optimisation that the package's tests (and this cell) hold to the same numbers.
#
# ## 7. Merging the heads, and why there are several
#
# Each head produced `weights @ v`: `[batch, heads, seq, d_k]`. To hand the result to the output
# projection, the heads are laid side by side again, `[batch, seq, heads·d_k] = [batch, seq, d_model]`:
# `transpose(1, 2)` moves the head axis next to `d_k`, and `reshape` fuses the two.

# %%
heads = weights @ v                                             # [batch, heads, seq, d_k]
moved = heads.transpose(1, 2)                                   # [batch, seq, heads, d_k]
merged = moved.reshape(batch, seq_len, D_MODEL)                 # [batch, seq, d_model]
print("heads", list(heads.shape), "-> transpose(1, 2)", list(moved.shape), "-> reshape", list(merged.shape))
print("head 2 sits in columns 32:48 of the merge:", torch.equal(merged[..., 2 * d_k:3 * d_k], heads[:, 2]))
print("out(merged) is the module's output:", torch.allclose(attention.out(merged), out_masked, atol=1e-6))
print("contiguous after transpose?", moved.is_contiguous())
try:
    moved.view(batch, seq_len, D_MODEL)
except RuntimeError as error:
    print("view fails:", str(error)[:90], "...")

# %% [markdown]
# `transpose` only changes the strides, so the head axis is no longer laid out next to `d_k` in
# memory and `view` cannot fuse them; `reshape` copies where it must. (The split in section 3 was
# the other way round: `view` first on contiguous memory, then `permute`, no copy at all.)
#
# How many parameters do the heads cost? None: the same `qkv` and `out` layers are cut into
# however many heads you like.

# %%
for num_heads in (1, 2, 4, 8, 16):
    module = sm.MultiHeadAttention(D_MODEL, num_heads)
    count = sum(p.numel() for p in module.parameters())
    print(f"{num_heads:2d} heads of d_k = {D_MODEL // num_heads:2d}: {count:,} parameters "
          f"(4·d_model² + 4·d_model = {4 * D_MODEL ** 2 + 4 * D_MODEL:,})")

# %% [markdown]
# What they buy is separate softmaxes. One head gives each query *one* weighted average of the
# values; four heads give four, each over its own 16-dimensional slice, each free to look somewhere
# else. Even with random weights the four patterns of our 13-character line differ:

# %% tags=["figure"]
fig, axes = plt.subplots(1, HEADS, figsize=(14, 4), layout="constrained")
for head, axis in enumerate(axes):
    axis.imshow(weights[0, head], cmap="viridis", vmin=0)
    axis.set_xticks(range(seq_len), chars[0], fontsize=7)
    axis.set_yticks(range(seq_len), chars[0], fontsize=7)
    axis.set_xlabel("key")
    axis.set_title(f"head {head}")
axes[0].set_ylabel("query")
fig.suptitle(f"Attention weights of the {HEADS} heads for {first!r} (random weights)")
plt.show()

# %% [markdown]
# > **Why several heads?** A softmax row is a single distribution, so one head must compromise:
# > if a character's prediction needs both the previous character and the next space, one head
# > averages them into one vector. With h heads each query gathers h separate averages (say, one
# > head for "left neighbour", one for "right neighbour", one for "start of the word") in
# > separate subspaces, and `out` mixes them. The price is not parameters (same count, above) but
# > a narrower d_k per head and h score matrices `[seq, seq]` to compute.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: one head by hand from the fused weights
#
# Compute the attention weights of **head 3** for the batch `x` (with the padding mask), using
# only `attention.qkv.weight`, `attention.qkv.bias`, `x` and `padding`: no call to `attention`,
# no `view`/`permute` of the whole `qkv(x)`. Which rows of the stacked weight belong to head 3's
# queries, and which to its keys? Store `answer_1`, shape `[batch, seq, seq]`.

# %% tags=["exercise"]
# BEGIN SOLUTION
rows_q = slice(3 * d_k, 4 * d_k)                                   # head 3 inside W_q
rows_k = slice(D_MODEL + 3 * d_k, D_MODEL + 4 * d_k)              # head 3 inside W_k
q3 = x @ attention.qkv.weight[rows_q].T + attention.qkv.bias[rows_q]
k3 = x @ attention.qkv.weight[rows_k].T + attention.qkv.bias[rows_k]
s3 = (q3 @ k3.transpose(-2, -1) / math.sqrt(d_k)).masked_fill(padding[:, None, :], torch.finfo(x.dtype).min)
answer_1 = s3.softmax(-1)
# END SOLUTION

# %%
check("Exercise 1", answer_1, weights[:, 3], tolerance=1e-5,
      hint="head h of Q is rows h·d_k:(h+1)·d_k of the weight; K's rows start at d_model; "
           "scale by 1/√d_k and mask the padding keys before the softmax")

# %% [markdown]
# ### Exercise 2: repair the after-softmax mask
#
# Take `after` (softmax first, padding columns zeroed afterwards) and repair it with one more
# operation so that, for every **real** query row, it equals the module's correctly masked
# `weights`. Store the repaired tensor `[batch, heads, seq, seq]` as `answer_2`. Then explain
# to yourself why the repair works, and why the leak of section 5 disappears with it.

# %% tags=["exercise"]
# BEGIN SOLUTION
answer_2 = (after / after.sum(-1, keepdim=True))
# END SOLUTION

# %%
real_rows = (~padding)[:, None, :, None].expand_as(weights)
check("Exercise 2", answer_2[real_rows], weights[real_rows], tolerance=1e-6,
      hint="what must every row of attention weights sum to?")

# %% [markdown]
# ### Exercise 3: attention in a freshly initialised model
#
# `sm.TransformerMLM` initialises every linear weight with standard deviation 0.02. Before
# running anything, predict the mean **entropy** (in nats) of a row of layer-0 attention weights
# for a full window of 32 characters. (Hint: how large are the scores `q·k/√d_k` when every
# weight is that small?) Store your prediction, a float, as `answer_3`; the check measures it on
# real text.

# %% tags=["exercise"]
# BEGIN SOLUTION
answer_3 = math.log(32)          # the scores are all ≈ 0, so every row is ≈ uniform over 32 keys
# END SOLUTION

# %%
torch.manual_seed(0)
fresh = sm.TransformerMLM(tokenizer.vocab_size).eval()
window = tokenizer.encode(text[:32], parse_special=False)[None]          # [1, 32]
_, layer_weights = fresh(window, return_attention=True)
p0 = layer_weights[0]
measured = -(p0 * p0.log()).sum(-1).mean().item()
check("Exercise 3", answer_3, measured, tolerance=0.01,
      hint="with tiny weights every score is ≈ 0; what is the entropy of a uniform distribution over n keys?")
