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
# # 04 · Embeddings and the encoder block
#
# Notebook 03 took attention apart. This one assembles the whole network around it,
# `sm.TransformerMLM` = `Embeddings` → `Encoder` (N × `EncoderLayer`) → `Generator`, and looks at it
# the way one looks at a new machine before switching it on: what goes in, how big each part is,
# and how signals and gradients travel through it at initialisation.
#
# **Learning objectives**
#
# - Read the sinusoidal position table as a bank of clocks, and show that a shift by `k` positions
#   is a fixed rotation of it (which is what lets attention see *relative* offsets).
# - Explain, with measured norms, why token embeddings are initialised with std `d_model^-0.5`
#   and multiplied by `√d_model`: tokens and positions enter at the same scale.
# - Contrast pre-norm and post-norm encoder layers, and measure per-layer activation and
#   gradient norms of both at initialisation.
# - Count the parameters module by module, and predict the total from the configuration.
# - Trace one forward pass, shape by shape, with forward hooks.
#
# Runs in about 10 s on 2 CPU cores; `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import inspect
import math

import matplotlib.pyplot as plt
import torch

import scratchmlm as sm
from scratchmlm.model import sinusoidal_positions
from scratchmlm.classroom.notebook import FAST, check, show_source, use_threads

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

torch.set_printoptions(precision=3, sci_mode=False)

BATCH_SIZE = 4 if FAST else 16       # windows in the batch used for the norm measurements
SEQ_LEN = 32                         # characters per window, the training default

# %% [markdown]
# ## 1. The model, its configuration and its parts
#
# The constructor's arguments are the whole configuration (`sm.ModelConfig` has the same fields
# with the same defaults). We build the default model for the Tiny Shakespeare vocabulary and
# print its module tree.

# %%
text = sm.load_text("tinyshakespeare")
split = sm.split_text(text)
tokenizer = sm.CharTokenizer.from_text(text)
train_ids = tokenizer.encode(split.train, parse_special=False)

print("TransformerMLM" + str(inspect.signature(sm.TransformerMLM)))
torch.manual_seed(0)
model = sm.TransformerMLM(tokenizer.vocab_size)
D_MODEL = model.embeddings.d_model
print(model)

# %% [markdown]
# ## 2. Embeddings: a vector per character, plus where it stands
#
# Attention (notebook 03) compares every position with every other, and it does not care in which
# order they come: permute the input vectors and the outputs are permuted the same way. Whatever
# the model knows about order must therefore be *in* the vectors. `sm.Embeddings` adds a position
# vector `P[t]` to each token vector:

# %%
show_source(sm.Embeddings.forward)

# %% [markdown]
# The default position table is fixed, not learned:
# `P[t, 2i] = sin(t · ω_i)`, `P[t, 2i+1] = cos(t · ω_i)` with `ω_i = 10000^(−2i/d_model)`.
# Each pair of columns is a clock hand turning at its own speed: the first pair turns once every
# 2π ≈ 6.3 positions, the last once every ~54,000. Here is the table over 128 positions (the model
# only uses the first `max_len = 32` rows), and the dot products of its rows with each other.

# %%
table = sinusoidal_positions(128, D_MODEL)                          # [positions, d_model]
print("table", list(table.shape), "; the model's own buffer is its first", model.max_len, "rows:",
      torch.equal(model.embeddings.position, table[:model.max_len]))
wavelengths = 2 * math.pi * 10000 ** (torch.arange(0, D_MODEL, 2) / D_MODEL)
print(f"wavelengths: {wavelengths[0]:.1f} positions (columns 0, 1) ... {wavelengths[-1]:,.0f} (the last pair)")

# %% tags=["figure"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
image = axes[0].imshow(table.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
axes[0].set_xlabel("position t")
axes[0].set_ylabel("dimension (even: sin, odd: cos)")
axes[0].set_title("sinusoidal position table P (transposed)")
fig.colorbar(image, ax=axes[0])
similarity = table @ table.T
image = axes[1].imshow(similarity, cmap="viridis")
axes[1].set_xlabel("position t'")
axes[1].set_ylabel("position t")
axes[1].set_title("P[t] · P[t'] depends only on t − t'")
fig.colorbar(image, ax=axes[1])
fig.tight_layout()
plt.show()

# %% [markdown]
# The right panel is constant along every diagonal: `P[t]·P[t+k] = Σ_i cos(k ω_i)` does not depend
# on `t`. More than that, `P[t+k]` is `P[t]` rotated: each (sin, cos) pair turns by the angle
# `k ω_i`, whatever `t` is (exercise 3 has you write that rotation). A linear map, such as the
# query and key projections, can therefore learn to look "three characters to the left" once,
# for every position.
#
# > **Why fixed sinusoids rather than a learned table?** They cost no parameters (the table is a
# > buffer, not a weight: it does not appear in `model.parameters()`), need no training to mean
# > something, and make relative offsets a fixed rotation. A learned table
# > (`positional="learned"`, also in the package) can fit anything but starts as noise and has
# > to learn every position separately; for 32-character windows both work.

# %% [markdown]
# ## 3. Why the token vectors are multiplied by √d_model
#
# The embedding matrix `E` is initialised with standard deviation `d_model^-0.5`, so a stored row
# has norm ≈ 1. `forward` multiplies it by `√d_model`, giving entries of unit scale and a row norm
# ≈ `√d_model`. A position row has `d_model / 2` pairs with `sin² + cos² = 1`, so its norm is
# exactly `√(d_model / 2)`. Measure all of them, and the alternative of a plain `N(0, 1)`
# initialisation with the same scaling:

# %%
E = model.embeddings.token.weight.detach()                          # [vocab, d_model]
P = model.embeddings.position                                       # [max_len, d_model]
rng = torch.Generator().manual_seed(0)
E_unit = torch.randn(E.shape, generator=rng)                        # N(0, 1), the nn.Embedding default
norms = {
    "E row (as stored)": E.norm(dim=1).mean().item(),
    "E row × √d_model\n(what the model adds)": (E * math.sqrt(D_MODEL)).norm(dim=1).mean().item(),
    "P row (position)": P.norm(dim=1).mean().item(),
    "N(0,1) row × √d_model\n(the alternative)": (E_unit * math.sqrt(D_MODEL)).norm(dim=1).mean().item(),
}
for name, value in norms.items():
    print(f"{name.replace(chr(10), ' '):45s} mean norm {value:7.2f}")
print(f"√d_model = {math.sqrt(D_MODEL):.2f}, √(d_model/2) = {math.sqrt(D_MODEL / 2):.2f}")


def position_share(token_rows):
    """Share of the embedding's squared norm that comes from the position signal."""
    return (P.norm(dim=1).pow(2).mean() / (token_rows.norm(dim=1).pow(2).mean() + P.norm(dim=1).pow(2).mean())).item()


shares = {"E, unscaled": position_share(E),
          "E × √d_model\n(the package)": position_share(E * math.sqrt(D_MODEL)),
          "N(0,1) × √d_model": position_share(E_unit * math.sqrt(D_MODEL))}
for name, value in shares.items():
    print(f"position share of the input, {name.replace(chr(10), ' '):25s}: {value:6.1%}")

# %% tags=["figure"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
axes[0].bar(range(len(norms)), list(norms.values()), color=["#bbb", "tab:blue", "tab:orange", "tab:red"])
axes[0].set_xticks(range(len(norms)), list(norms.keys()), fontsize=8)
axes[0].set_yscale("log")
axes[0].set_ylabel("mean row norm (log scale)")
axes[0].set_title(f"token and position vectors, d_model = {D_MODEL}")
axes[1].bar(range(len(shares)), [100 * s for s in shares.values()], color=["#bbb", "tab:blue", "tab:red"])
axes[1].set_xticks(range(len(shares)), list(shares.keys()), fontsize=8)
axes[1].set_ylabel("% of the squared norm that is position")
axes[1].set_title("how much of the input says *where*")
fig.tight_layout()
plt.show()

# %% [markdown]
# > **Why ×√d_model, with std d_model^-0.5?** So that the two signals the model adds together
# > arrive at the same order of magnitude. Unscaled, the token vectors (norm ≈ 1) would be
# > drowned by positions (norm 8): almost all of the input would say *where* and almost nothing
# > *what*. With `nn.Embedding`'s default N(0, 1) and the scaling, it is the other way round:
# > tokens with norm ≈ 128 against positions with norm 8, and the model starts nearly blind to
# > order. The package's choice puts about a third of the input's energy in the position signal.
# > (The ×√d_model itself comes from the original transformer, "Attention Is All You Need".)

# %% [markdown]
# ## 4. The encoder layer: pre-norm and post-norm
#
# Each encoder layer has two sub-layers (attention, then a position-wise feed-forward network),
# each inside a residual connection, with a LayerNorm either *before* the sub-layer (pre-norm,
# the package default) or *after* the residual sum (post-norm, the original transformer and BERT):

# %%
show_source(sm.EncoderLayer.forward)

# %% [markdown]
# The difference is where the residual stream `x` is normalised. In post-norm every layer's output
# is a LayerNorm output, so its scale is reset to 1 at every layer, and the gradient on its way back
# passes through every LayerNorm. In pre-norm the stream `x` itself is never normalised: each
# sub-layer reads a normalised copy and *adds* its result, so the stream can grow with depth,
# and there is a path from the loss to every layer through additions alone. Because that stream
# is never normalised, the encoder ends with one more LayerNorm, `final_norm`, for pre-norm
# stacks only.
#
# Measure it. Two models with the same seed, one of each kind; one masked batch; forward hooks
# record every layer's output (the residual stream after the layer); one backward of the masked
# loss; then per layer: the RMS of the stream, and the norm of the gradient
# on that layer's parameters. Dropout is off so that a single batch gives a clean measurement.
# The package initialises linear weights with std 0.02; we also measure a larger init (std 0.1,
# about twice PyTorch's own default of 1/√(3·128) ≈ 0.05 for these widths) to see what happens
# once the sub-layers' outputs are no longer tiny, as they will not be after some training.

# %%
rng = torch.Generator().manual_seed(0)
masker = sm.BertMasker.for_tokenizer(tokenizer)
batch = masker(sm.random_windows(train_ids, BATCH_SIZE, SEQ_LEN, rng), rng)


def norms_at_init(norm_first, init_std):
    torch.manual_seed(0)
    net = sm.TransformerMLM(tokenizer.vocab_size, norm_first=norm_first, dropout=0.0, init_std=init_std)
    outputs = []

    def keep(module, inputs, output):                    # a forward hook: sees the layer's output
        outputs.append(output)

    hooks = [layer.register_forward_hook(keep) for layer in net.encoder.layers]
    loss, _ = sm.masked_cross_entropy(net(batch.inputs), batch.labels)
    loss.backward()
    for hook in hooks:
        hook.remove()
    return {
        "activation RMS": [o.detach().pow(2).mean().sqrt().item() for o in outputs],
        "parameter gradient norm": [torch.cat([p.grad.flatten() for p in layer.parameters()]).norm().item()
                                    for layer in net.encoder.layers],
        "total gradient norm": torch.cat([p.grad.flatten() for p in net.parameters()]).norm().item(),
        "loss": loss.item(),
    }


INIT_STDS = (0.02, 0.1)
measured = {(nf, std): norms_at_init(nf, std) for std in INIT_STDS for nf in (True, False)}
for (nf, std), m in measured.items():
    print(f"{'pre-norm ' if nf else 'post-norm'} init_std {std}: loss {m['loss']:.2f}, "
          f"activation RMS {' '.join(f'{v:.2f}' for v in m['activation RMS'])}, "
          f"total gradient norm {m['total gradient norm']:.2f}")

# %% tags=["figure"]
fig, axes = plt.subplots(2, len(INIT_STDS), figsize=(12, 7), sharex=True)
layers = range(1, len(model.encoder.layers) + 1)
for column, std in enumerate(INIT_STDS):
    for row, quantity in enumerate(("activation RMS", "parameter gradient norm")):
        axis = axes[row, column]
        for nf, style in ((True, "o-"), (False, "s--")):
            axis.plot(layers, measured[(nf, std)][quantity], style, label="pre-norm" if nf else "post-norm")
        axis.set_ylim(bottom=0)
        axis.set_ylabel(quantity)
        axis.set_title(f"{quantity} per layer, init_std = {std}" + (" (package)" if std == 0.02 else ""))
        axis.legend()
    axes[1, column].set_xlabel("encoder layer")
fig.suptitle("Pre-norm vs post-norm at initialisation (one masked batch, dropout off)")
fig.tight_layout()
plt.show()

# %% [markdown]
# What the plots show:
#
# - **Post-norm activations are exactly 1 at every layer** (a LayerNorm output with gain 1 and bias 0
#   has unit RMS). **Pre-norm activations** start at the embeddings' scale (≈ 1.2) and grow as each
#   sub-layer adds to the stream: barely with the package's std 0.02, where every sub-layer's
#   output is tiny, and clearly with std 0.1.
# - **Gradients**: post-norm's are larger at every layer, with either init (the ratio is printed
#   below). With std 0.02 both stacks are close to identity maps and every layer gets about the
#   same gradient. With std 0.1, in pre-norm the earlier layers get more: the gradient at a
#   layer's output is what comes down the residual path *plus* what every later sub-layer sends
#   back through its own branch, so it accumulates towards the input. The total gradient norm
#   (printed above) is what gradient clipping at 1.0 sees in notebook 05.

# %%
for std in INIT_STDS:
    ratios = [post / pre for pre, post in zip(measured[(True, std)]["parameter gradient norm"],
                                              measured[(False, std)]["parameter gradient norm"])]
    print(f"init_std {std}: post-norm / pre-norm gradient norm per layer: {' '.join(f'{r:.1f}' for r in ratios)}")

# %% [markdown]
# > **Why pre-norm by default?** In post-norm every gradient passes through every LayerNorm, and
# > the gradients are larger at the start of training (measured above; Xiong et al. 2020, "On Layer
# > Normalization in the Transformer Architecture", work out why), so the original transformer and
# > BERT needed a long learning-rate warm-up to survive the first steps (notebook 06). In pre-norm
# > the residual stream is an uninterrupted sum from the embeddings to the final norm, so each
# > layer has a direct additive path to the loss, which keeps early training stable. The price is
# > the un-normalised stream, hence `final_norm`, and a stream that grows with depth. With only six
# > layers the difference is small in practice: the ablation in `experiments/README.md` finds
# > post-norm at 0.356 top-1 after 1000 steps against 0.365 for pre-norm.
#
# > **Why residual connections at all?** `x + f(x)` makes "do nothing" the easy default for a
# > layer (f ≈ 0, as with the small init here), so a deep stack starts as a near-identity map
# > whose gradients reach every layer, instead of a product of six random transformations.

# %% [markdown]
# ## 5. Where the parameters are
#
# `num_parameters()` is one number; split it by module. The position table is a buffer, so it
# counts zero; each encoder layer has the same three parts.

# %%
def count(module):
    return sum(p.numel() for p in module.parameters())


rows = [("embeddings (token table)", count(model.embeddings))]
for index, layer in enumerate(model.encoder.layers):
    parts = {"attention": count(layer.attention), "feed-forward": count(layer.feed_forward),
             "norms": count(layer.norm1) + count(layer.norm2)}
    rows.append((f"layer {index}: " + ", ".join(f"{k} {v:,}" for k, v in parts.items()), sum(parts.values())))
rows += [("final norm", count(model.encoder.final_norm)), ("generator", count(model.generator))]
for name, n in rows:
    print(f"{name:58s} {n:8,d}")
total = sum(n for _, n in rows)
print(f"{'sum':58s} {total:8,d}")
print(f"{'model.num_parameters()':58s} {model.num_parameters():8,d}")

# %% tags=["figure"]
groups = {"embeddings": count(model.embeddings),
          "attention (all layers)": sum(count(l.attention) for l in model.encoder.layers),
          "feed-forward (all layers)": sum(count(l.feed_forward) for l in model.encoder.layers),
          "LayerNorms (all, incl. final)": sum(count(l.norm1) + count(l.norm2) for l in model.encoder.layers)
          + count(model.encoder.final_norm),
          "generator": count(model.generator)}
fig, axis = plt.subplots(figsize=(9, 3.4))
axis.barh(list(groups), list(groups.values()), color="tab:blue")
for y, value in enumerate(groups.values()):
    axis.text(value, y, f" {value:,} ({value / model.num_parameters():.1%})", va="center", fontsize=9)
axis.invert_yaxis()
axis.set_xlim(0, max(groups.values()) * 1.35)
axis.set_xlabel("parameters")
axis.set_title(f"{model.num_parameters():,} parameters of the default TransformerMLM, by module")
fig.tight_layout()
plt.show()

# %% [markdown]
# > **Why is d_ff only 2 × d_model here?** The usual ratio is 4 (BERT: 768 → 3072). The package's
# > small default, `d_ff = 256`, makes the feed-forward block the same size as attention (about
# > 66k parameters each per layer) and keeps the whole model small enough to train on a CPU; the
# > ratio is a configuration choice (`--d-ff`), not a property of the architecture. Note how small the
# > character vocabulary makes the embeddings and the generator: for a word-piece model with
# > 30,000 tokens they would dominate the count.

# %% [markdown]
# ## 6. One forward pass, shape by shape
#
# A forward hook on every module records what goes in and what comes out, in the order the
# modules are entered (a forward *pre*-hook notes the entry). We trace a batch of two windows in
# evaluation mode (dropout is then the identity) and print layer 0 in full and only the outline of
# the other layers, which are identical.

# %%
calls, open_calls, hooks = [], [], []


def shape_of(value):
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return shape_of(value[0])
    return "?"


for name, module in model.named_modules():
    def entering(module, inputs, name=name):                          # called on entry
        depth = len(open_calls)                                       # how many calls enclose this one
        calls.append([name or "(model)", depth, type(module).__name__, shape_of(inputs), None])
        open_calls.append(calls[-1])

    def leaving(module, inputs, output):                             # called on exit (innermost first)
        open_calls.pop()[4] = shape_of(output)

    hooks += [module.register_forward_pre_hook(entering), module.register_forward_hook(leaving)]

ids = sm.random_windows(train_ids, 2, SEQ_LEN, torch.Generator().manual_seed(1))
model.eval()
with torch.no_grad():
    logits = model(ids)
for hook in hooks:
    hook.remove()

for name, depth, kind, shape_in, shape_out in calls:
    if name.startswith("encoder.layers.") and not name.startswith("encoder.layers.0") and kind != "EncoderLayer":
        continue                                                # layers 1-5: outline only
    print(f"{'  ' * depth + name:<50s} {kind:<18s} {shape_in:>14s} -> {shape_out}")

# %% [markdown]
# Read it top to bottom: ids `[batch, seq]` become vectors `[batch, seq, d_model]` in the
# embeddings (the position table is a buffer added inside `forward`, so only the token lookup
# shows) and stay that shape through every layer. Inside attention, `qkv` widens to `3·d_model`;
# the split into heads happens inside `forward`, not in a module, but it shows through the
# attention's dropout, which is applied to the weights `[batch, heads, seq, seq]` (notebook 03
# traced it all). Inside the feed-forward block `linear1` widens to `d_ff` and `linear2` narrows
# back. Only the generator leaves the model width, to `vocab` logits.
#
# > **Why does every sub-layer keep the shape `[batch, seq, d_model]`?** Because of the residual
# > connections: `x + f(x)` needs `f(x)` to be the same shape as `x`. That constraint is what lets
# > layers be stacked, reordered (pre- vs post-norm) or added without changing anything else.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: how much of a wider model's input is position?
#
# Section 3 measured that about a third of the input's squared norm is position signal at
# `d_model = 128`. Predict the share for `sm.Embeddings` with `d_model = 512` (the package's
# initialisation and scaling, sinusoidal positions), as a fraction between 0 and 1, before
# measuring anything. Store it as `answer_1`. Does your answer depend on `d_model` at all?

# %% tags=["exercise"]
# BEGIN SOLUTION
# scaled token rows: d entries of variance 1 -> squared norm d; position rows: d/2 pairs with
# sin² + cos² = 1 -> squared norm d/2. Share = (d/2) / (d + d/2) = 1/3, whatever d_model is.
answer_1 = 1 / 3
# END SOLUTION

# %%
torch.manual_seed(0)
wide = sm.Embeddings(tokenizer.vocab_size, 512, max_len=SEQ_LEN, dropout=0.0)
token_energy = (wide.token.weight.detach() * math.sqrt(512)).pow(2).sum(1).mean()
position_energy = wide.position.pow(2).sum(1).mean()
check("Exercise 1", answer_1, (position_energy / (token_energy + position_energy)).item(), tolerance=0.01,
      hint="the squared norm of a scaled token row is d_model × (its entries' variance); "
           "a position row has d_model/2 (sin, cos) pairs")

# %% [markdown]
# ### Exercise 2: the parameter count from the configuration
#
# Write `num_params(vocab_size, d_model, num_layers, d_ff)` that returns the number of parameters
# of a `sm.TransformerMLM` with sinusoidal positions, from the formulas of section 5 (no model
# built inside): count the weights and biases of each layer in the module tree printed in
# section 1. Before running the check: how does the count depend on `num_heads`, and on `max_len`?

# %% tags=["exercise"]
def num_params(vocab_size, d_model, num_layers, d_ff):
    # BEGIN SOLUTION
    attention = 4 * d_model * d_model + 4 * d_model              # qkv (d·3d + 3d) and out (d·d + d)
    feed_forward = 2 * d_model * d_ff + d_ff + d_model           # linear1 and linear2
    norms = 2 * 2 * d_model                                      # two LayerNorms, gain and bias each
    layer = attention + feed_forward + norms
    return vocab_size * d_model + num_layers * layer + 2 * d_model + d_model * vocab_size + vocab_size
    # END SOLUTION


# %%
configs = [dict(vocab_size=68, d_model=128, num_heads=8, num_layers=6, d_ff=256, max_len=32),
           dict(vocab_size=50, d_model=64, num_heads=2, num_layers=3, d_ff=300, max_len=100),
           dict(vocab_size=10, d_model=24, num_heads=6, num_layers=1, d_ff=8, max_len=5)]
got = [num_params(c["vocab_size"], c["d_model"], c["num_layers"], c["d_ff"]) for c in configs]
expected = [sm.TransformerMLM(**c).num_parameters() for c in configs]
check("Exercise 2", got, expected,
      hint="count weights and biases of every nn.Linear, gain and bias of every LayerNorm, the token table; "
           "the position table is a buffer, and a pre-norm stack has one final LayerNorm")

# %% [markdown]
# ### Exercise 3: a shift is a rotation
#
# Write `shift(rows, k, d_model)` that takes rows of the position table, `rows = P[t]` for some
# positions t (`[n, d_model]`), and returns `P[t + k]` **without** looking up the table again:
# only from `rows`, `k` and the frequencies `ω_i = 10000^(−2i/d_model)`. (Use
# `sin(a + b) = sin a cos b + cos a sin b` and `cos(a + b) = cos a cos b − sin a sin b` on each
# (sin, cos) column pair.) Note what your function does *not* need: the positions t themselves.

# %% tags=["exercise"]
def shift(rows, k, d_model):
    # BEGIN SOLUTION
    omega = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    cos_b, sin_b = torch.cos(k * omega), torch.sin(k * omega)
    sin_a, cos_a = rows[:, 0::2].double(), rows[:, 1::2].double()
    shifted = torch.empty(rows.shape, dtype=torch.float64)
    shifted[:, 0::2] = sin_a * cos_b + cos_a * sin_b
    shifted[:, 1::2] = cos_a * cos_b - sin_a * sin_b
    return shifted.float()
    # END SOLUTION


# %%
full_table = sinusoidal_positions(64, D_MODEL)
got = torch.cat([shift(full_table[:40], k, D_MODEL) for k in (1, 7, 24)])
expected = torch.cat([full_table[k:k + 40] for k in (1, 7, 24)])
check("Exercise 3", got, expected, tolerance=1e-4,
      hint="columns 2i and 2i+1 hold sin(t·ω_i) and cos(t·ω_i); rotate each pair by the angle k·ω_i")
