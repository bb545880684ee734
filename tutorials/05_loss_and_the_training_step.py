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
# # 05 · The loss and the training step
#
# Notebooks 01–04 built every piece: windows, the masker, attention, the encoder. Training glues
# them together in one short function, `sm.train_step`, called thousands of times. This notebook
# reads it line by line, runs its eight steps one at a time on a real batch with the real model,
# optimizer and schedule, and checks that the pieces add up to exactly one call of `train_step`.
#
# **Learning objectives**
#
# - Name the eight steps of a training step in order (mask, forward, loss, backward, clip,
#   optimizer step, schedule step, zero the gradients) and say what each one changes.
# - Show that the masked loss gives a gradient of exactly zero to the logits of unselected
#   positions, and derive the gradient it gives to the selected ones.
# - Explain why the loss is a *mean* over the selected positions, and predict what a sum would do.
# - Measure the global gradient norm of a real batch, apply clipping, and see that it rescales
#   every parameter's gradient by one common factor.
# - Run the sanity check every training loop should pass: overfit one fixed batch until the loss
#   is close to 0.
#
# Runs in about 11 s on 2 CPU cores; `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import scratchmlm as sm
from scratchmlm.classroom.notebook import FAST, check, show_source, use_threads
from scratchmlm.sample import visible

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

torch.set_printoptions(precision=4, sci_mode=False)

BATCH_SIZE, SEQ_LEN = 16, 32     # one small batch [batch, seq] of training windows
CLIP_NORM = 1.0                  # the seed configuration's gradient-norm clip
WARMUP = 2000                    # the seed configuration's Noam warm-up
MASK_SEED, DROPOUT_SEED = 7, 11  # the masking generator and the global (dropout) generator

text = sm.load_text("tinyshakespeare")
tokenizer = sm.CharTokenizer.from_text(text)
train_ids = tokenizer.encode(sm.split_text(text).train, parse_special=False)
masker = sm.BertMasker.for_tokenizer(tokenizer)
ids = sm.random_windows(train_ids, BATCH_SIZE, SEQ_LEN, torch.Generator().manual_seed(0))   # [batch, seq]
print("ids:", list(ids.shape), "| first window:", repr(tokenizer.decode(ids[0])))

# %% [markdown]
# ## 1. The step, as written
#
# Here is the whole function. Everything the model ever learns comes through these lines.

# %%
show_source(sm.train_step)

# %% [markdown]
# It needs a model, an optimizer and a schedule. We build the default model (the seed
# configuration: d_model 128, 6 layers) and, as the `Trainer` does, Adam with β = (0.9, 0.98),
# ε = 1e-9, driven by `sm.NoamScheduler`, which overwrites the optimizer's learning rate at every
# step (notebook 06 is about the schedule). Then we make an exact copy of all three: one copy will
# go through the eight steps by hand, the other through one call of `train_step`.

# %%
def adam_and_noam(model: torch.nn.Module) -> tuple[torch.optim.Adam, sm.NoamScheduler]:
    """The optimizer and schedule the Trainer builds for the seed configuration."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9)
    return optimizer, sm.NoamScheduler(optimizer, d_model=model.embeddings.d_model, warmup=WARMUP)


torch.manual_seed(0)
model = sm.TransformerMLM(tokenizer.vocab_size).train()       # training mode: dropout on
twin = copy.deepcopy(model)
optimizer, scheduler = adam_and_noam(model)
twin_optimizer, twin_scheduler = adam_and_noam(twin)
print(f"{model.num_parameters():,} parameters in {len(list(model.parameters()))} tensors; "
      f"learning rate of step 1: {optimizer.param_groups[0]['lr']:.3e}")

# %% [markdown]
# ## 2. The eight steps, one at a time
#
# **Step 1 — mask.** The masker (notebook 02) picks the questions. It runs under `torch.no_grad()`:
# choosing positions is not something to differentiate. Its randomness comes from `rng` alone.

# %%
rng = torch.Generator().manual_seed(MASK_SEED)
with torch.no_grad():
    masked = masker(ids, rng)
selected = masked.selected                                              # [batch, seq], labels != -100
print(f"{int(selected.sum())} of {ids.numel()} positions selected")
print("model sees:", "".join("▒" if i == tokenizer.mask_id else visible(tokenizer.vocab[i])
                             for i in masked.inputs[0].tolist()), "  (▒ = [MASK])")

# %% [markdown]
# **Step 2 — forward.** Dropout draws from the global generator, so we seed it (the twin will get
# the same seed). `retain_grad()` asks autograd to keep dL/dlogits, which it would normally throw
# away because `logits` is an intermediate tensor, not a parameter; it changes no number.

# %%
torch.manual_seed(DROPOUT_SEED)
logits = model(masked.inputs)                                           # [batch, seq, vocab]
logits.retain_grad()
print("logits:", list(logits.shape))

# %% [markdown]
# **Step 3 — the loss on the selected positions.** `sm.masked_cross_entropy` sums −log p(label)
# over the positions whose label is not −100 and divides by their number:

# %%
show_source(sm.masked_cross_entropy)
loss, num_scored = sm.masked_cross_entropy(logits, masked.labels)
log_probs = logits.detach().log_softmax(dim=-1)
by_hand = -log_probs[selected].gather(1, masked.labels[selected][:, None]).mean()
print(f"loss {loss.item():.4f} over {num_scored.item()} positions; by hand {by_hand.item():.4f}; "
      f"ln(vocab) = {math.log(tokenizer.vocab_size):.4f}")

# %% [markdown]
# The freshly initialised model is almost exactly as unsure as a uniform guess over 68 tokens
# (exercise 1 asks why).
#
# > **Why is the loss computed only on the selected positions?** At an unselected position the
# > input already *is* the answer. Scoring it would teach the model to copy its input, an easy
# > identity map that would contribute 85% of the terms and drown the 15% that need context. The
# > masked positions are the only questions in the batch, so they are the only ones graded.
#
# > **Why divide by the count?** The number of selected positions is random (binomial: on average
# > 0.15 × 512 ≈ 77 in this batch shape, give or take 8) and grows with the batch. A sum would
# > make the size of the gradient depend on how many questions the masker happened to draw and on
# > the batch size, so the learning rate and the clip threshold would mean something different for
# > every batch. The mean makes the loss "nats per question", comparable across batches, batch
# > sizes and runs.
# > (`max(count, 1)` keeps a batch with no question at loss 0 instead of 0/0 = NaN.)
#
# **Step 4 — backward.** One call fills `.grad` of every parameter with dL/dθ — and, because we
# asked, `logits.grad` with dL/dlogits.

# %%
loss.backward()
per_position = logits.grad.norm(dim=-1)                                 # [batch, seq]
print("dL/dlogits is non-zero exactly at the selected positions:", torch.equal(per_position != 0, selected))
print("largest |dL/dlogits| at an unselected position:", per_position[~selected].max().item())

# %% tags=["figure"]
fig, ax = plt.subplots(figsize=(12, 4.6))
image = ax.imshow(per_position.numpy(), cmap="Blues", aspect="auto", vmin=0)
rows, cols = torch.nonzero(selected, as_tuple=True)
ax.scatter(cols, rows, s=60, facecolors="none", edgecolors="tab:red", linewidths=1, label="selected position")
fig.colorbar(image, ax=ax, label="‖dL/dlogits‖ over the vocabulary")
ax.set_xlabel("position in the window (seq)")
ax.set_ylabel("window (batch)")
ax.set_title("Where the loss sends gradient: only the selected positions (all others are exactly 0)")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=9)
plt.show()

# %% [markdown]
# The gradient does not stop at the logits, of course: attention mixes positions, so the weights
# that *produced* an unselected position's vector still get gradient through its neighbours. What
# is zero is the direct demand "predict this visible character". Every coloured cell has roughly
# the same size, of order 1/N for the N selected positions: each question gets the same vote,
# which is what the mean buys. (Exercise 2 derives the exact value.)
#
# **Step 5 — clip.** `clip_grad_norm_` treats the model's 77 gradient tensors as one long vector
# g = (g₁, …, g₇₇), measures its length ‖g‖ = √(Σᵢ ‖gᵢ‖²), and, if that exceeds `clip_norm`,
# multiplies *every* gradient by the same factor `clip_norm / ‖g‖`. We measure before and after:

# %%
names = [name for name, _ in model.named_parameters()]
norms_before = torch.stack([p.grad.norm() for p in model.parameters()])       # one norm per tensor
grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
norms_after = torch.stack([p.grad.norm() for p in model.parameters()])
scale = min(1.0, CLIP_NORM / (grad_norm.item() + 1e-6))
global_by_hand = norms_before.square().sum().sqrt()
print(f"global norm before: {grad_norm.item():.4f}  (√Σ‖gᵢ‖² by hand: {global_by_hand.item():.4f})")
print(f"scale factor min(1, clip / ‖g‖): {scale:.4f}")
print(f"global norm after:  {norms_after.square().sum().sqrt().item():.4f}")
print("every tensor scaled by the same factor:", torch.allclose(norms_after / norms_before, torch.tensor(scale)))
print("largest gradients:", ", ".join(f"{names[i]} {norms_before[i]:.3f}" for i in norms_before.argsort()[-3:].flip(0)))


# %% tags=["figure"]
def group_of(name: str) -> str:
    parts = name.split(".")
    if parts[1] == "layers":
        return f"layer {parts[2]}"
    return "final norm" if parts[1] == "norm" else parts[0]


groups = [group_of(name) for name in names]
colours = {g: plt.cm.tab10(i) for i, g in enumerate(dict.fromkeys(groups))}
fig, ax = plt.subplots(figsize=(13, 4.4))
x = np.arange(len(names))
ax.bar(x, norms_before.numpy(), color=[colours[g] for g in groups], alpha=0.45, label="before clipping")
ax.plot(x, norms_after.numpy(), "k_", markersize=7, label=f"after clipping (× {scale:.3f})")
centres = [np.mean([i for i, g in enumerate(groups) if g == group]) for group in colours]
ax.set_xticks(centres, list(colours), rotation=30, fontsize=8)
ax.set_yscale("log")
ax.set_ylim(top=norms_before.max().item() * 6)
ax.set_xlabel("parameter tensor, in model order (each layer: attention, feed-forward, two LayerNorms)")
ax.set_ylabel("gradient L2 norm ‖gᵢ‖")
ax.set_title(f"Per-tensor gradient norms on one batch: global norm {grad_norm.item():.2f} → {CLIP_NORM:g}")
ax.legend(loc="upper center", fontsize=9, ncol=2)
plt.show()

# %% [markdown]
# On a log scale, clipping is a rigid shift: every bar moves down by the same distance, so the
# *relative* sizes, and hence the direction of the step, are untouched.
#
# > **Why clip the global norm, and not each gradient separately?** Clipping is a guard against
# > the rare batch whose gradient is huge (a strange window, a sharp spot in the loss surface); one
# > such step can throw the weights far from where training had brought them. Scaling all
# > gradients by one common factor shortens the step but keeps its direction, which is still the
# > steepest way down for this batch. Clipping each tensor (or each coordinate) on its own would
# > shrink some parts and not others and point the step somewhere the gradient never said. In the
# > seed configuration's 6000-step run the gradient norm stays between about 0.7 and 2 throughout,
# > so a clip at 1 touches many ordinary steps too. That costs little with Adam, which divides by
# > √v̂: scaling every step by a similar factor hardly changes the update. What the clip does
# > change is the rare step many times larger than usual: it enters Adam's averages m and v at
# > norm 1 instead of dominating them for the next few dozen steps.
#
# **Step 6 — the optimizer step.** The scheduler has already written this step's rate into the
# optimizer (that is the `lr` that `train_step` reports). At Adam's first step its two running
# averages hold one gradient each, m̂ = g and v̂ = g², so the update −lr · m̂ / (√v̂ + ε) is
# −lr · sign(g): every weight with a non-zero gradient moves by the *same* amount, lr. We check:

# %%
lr = optimizer.param_groups[0]["lr"]
before = torch.cat([p.detach().flatten() for p in model.parameters()])
optimizer.step()
moved = (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).abs()
print(f"lr = {lr:.4e} = noam_lr(1, 128, {WARMUP}) = {sm.noam_lr(1, 128, WARMUP):.4e}")
moved_by_lr = torch.isclose(moved, torch.tensor(lr), rtol=0.01).float().mean()
print(f"weights that moved by lr (within 1%): {moved_by_lr:.2%}; "
      f"did not move: {(moved == 0).float().mean():.2%} (no gradient, e.g. embedding rows of absent characters)")

# %% [markdown]
# That first step is about as large as Adam's steps ever get relative to the learning rate, and it
# rests on a single batch — notebook 06 shows why this is the reason for warming the learning
# rate up.
#
# **Step 7 — the schedule step** moves the rate on to step 2's. **Step 8 — zero the gradients**
# (`set_to_none=True` drops the gradient tensors altogether).

# %%
scheduler.step()
optimizer.zero_grad(set_to_none=True)
print(f"next lr {optimizer.param_groups[0]['lr']:.4e} = noam_lr(2, ...) = {sm.noam_lr(2, 128, WARMUP):.4e}; "
      f"gradients now: {set(type(p.grad).__name__ for p in model.parameters())}")

# %% [markdown]
# > **Why zero the gradients?** `backward()` does not *write* `.grad`, it *adds* to it. That is
# > deliberate (it lets you accumulate several small batches into one big one), but it means a
# > loop that forgets to clear them trains on the running sum of all past gradients. Seen directly
# > on the twin, before its step: two backward passes of the same loss give exactly twice the
# > gradient.

# %%
with sm.eval_mode(twin):                              # no dropout: the same loss both times
    twin_loss, _ = sm.masked_cross_entropy(twin(masked.inputs), masked.labels)
twin_loss.backward(retain_graph=True)
once = twin.generator.projection.weight.grad.clone()
twin_loss.backward()
print("after a second backward, grad == 2 × grad:", torch.equal(twin.generator.projection.weight.grad, 2 * once))
twin.zero_grad(set_to_none=True)

# %% [markdown]
# ## 3. The same thing, in one call
#
# Now the twin takes one `train_step` from the identical state: same weights, same fresh Adam,
# same schedule, a masking generator with the same seed, the same dropout seed.

# %%
torch.manual_seed(DROPOUT_SEED)
result = sm.train_step(twin, ids, masker, torch.Generator().manual_seed(MASK_SEED),
                       twin_optimizer, twin_scheduler, CLIP_NORM)
print(result)
print("loss equal:        ", torch.equal(result.loss, loss.detach()))
print("grad norm equal:   ", torch.equal(result.grad_norm, grad_norm))
print("lr equal:          ", result.lr == lr)
print("weights identical: ", all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters())))
print("Adam state equal:  ", all(torch.equal(optimizer.state[a]["exp_avg_sq"], twin_optimizer.state[b]["exp_avg_sq"])
                                  for a, b in zip(model.parameters(), twin.parameters())))
print("next lr equal:     ", optimizer.param_groups[0]["lr"] == twin_optimizer.param_groups[0]["lr"])

# %% [markdown]
# Bit for bit the same: the eight steps *are* the training step. `train_step` also counts the
# correct top-1 predictions, and it returns tensors rather than Python numbers so that on a GPU the
# loop never waits for the device; the `Trainer` reads them only when it logs.

# %% [markdown]
# ## 4. The sanity check: overfit one batch
#
# Before spending an hour on a training run, check that the loop can learn *anything*: give it one
# fixed batch with fixed masks and let it train on that alone. A model with 800,000 parameters
# can memorise the 78 answers of our batch, so the loss must fall to nearly 0. If it does not,
# something in the chain is broken (labels misaligned with the logits, gradients not reaching a part of the
# model, a learning rate of zero, a `zero_grad` in the wrong place) — and it is far cheaper to find
# out in seconds than after a run.
#
# We use a fresh model of the seed configuration with dropout switched off (dropout is noise added
# on purpose against memorising, and here memorising is the goal) and a short warm-up, 20 steps.
# "Fixed masks" needs no special code: `train_step` masks with the generator it is given, so a
# generator freshly seeded the same way every step draws the same masks every step.

# %%
OVERFIT_STEPS = 60 if FAST else 150
torch.manual_seed(0)
memoriser = sm.TransformerMLM(tokenizer.vocab_size, dropout=0.0)
memoriser_optimizer = torch.optim.Adam(memoriser.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9)
memoriser_scheduler = sm.NoamScheduler(memoriser_optimizer, d_model=128, warmup=20, factor=0.25)
history = []
for step in range(OVERFIT_STEPS):
    r = sm.train_step(memoriser, ids, masker, torch.Generator().manual_seed(MASK_SEED),
                      memoriser_optimizer, memoriser_scheduler, CLIP_NORM)
    history.append((r.loss.item(), (r.num_correct / r.num_scored).item(), r.lr))
losses, accuracies, rates = map(np.array, zip(*history))
print(f"{memoriser.num_parameters():,} parameters; the same {int(r.num_scored)} questions every step")
print(f"loss {losses[0]:.3f} → {losses[-1]:.5f}; accuracy {accuracies[0]:.1%} → {accuracies[-1]:.1%}")

# %% tags=["figure"]
steps = np.arange(1, OVERFIT_STEPS + 1)
fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4))
loss_ax.semilogy(steps, losses, label="training loss on the fixed batch")
loss_ax.axhline(math.log(tokenizer.vocab_size), color="grey", linestyle="--", label="ln(vocab): a uniform guess")
loss_ax.set_xlabel("optimizer step")
loss_ax.set_ylabel("masked cross-entropy (nats, log scale)")
loss_ax.set_title("Overfitting one batch: the loss falls toward 0")
loss_ax.legend()
acc_ax.plot(steps, accuracies * 100, color="tab:green", label="top-1 on the fixed questions")
acc_ax.set_xlabel("optimizer step")
acc_ax.set_ylabel("accuracy (%)")
acc_ax.set_title("…and every question is answered")
lr_ax = acc_ax.twinx()
lr_ax.plot(steps, rates, color="tab:grey", linewidth=1, label="learning rate (right axis)")
lr_ax.set_ylabel("learning rate")
acc_ax.legend(handles=acc_ax.get_lines() + lr_ax.get_lines(), loc="center right")
fig.tight_layout()
plt.show()

# %% [markdown]
# > **Why run this check at all?** A broken training loop rarely crashes; it just learns slowly or
# > not at all, and that looks the same as "needs more steps". Overfitting one batch separates the
# > two: it asks only whether gradients flow from the loss to every weight and whether the step
# > moves the weights downhill. It says nothing about generalising — this model has learned 78
# > answers, not Shakespeare — which is why real training draws fresh windows and masks each step.

# %% [markdown]
# ## Exercises

# %% [markdown]
# ### Exercise 1: the loss of a model that knows nothing
#
# Section 2 measured the loss of the freshly initialised model. Predict it without running the
# model: what are the logits of a model whose final linear layer has weights of std 0.02 and zero
# bias, roughly, and what cross-entropy does that give over a vocabulary of
# `tokenizer.vocab_size` tokens? Write the number as an expression. (The check allows 0.1 nats:
# the logits are small, std ≈ 0.02 · √128 ≈ 0.23, but not exactly zero.)

# %% tags=["exercise"]
# BEGIN SOLUTION
answer_1 = math.log(tokenizer.vocab_size)      # logits ≈ 0 → softmax ≈ uniform → −log(1/V)
# END SOLUTION

# %%
check("Exercise 1", answer_1, loss.item(), tolerance=0.1,
      hint="tiny logits make the softmax nearly uniform; what is −log of a uniform probability?")

# %% [markdown]
# ### Exercise 2: the gradient at a selected position
#
# `logits.grad` from section 2 holds dL/dlogits `[batch, seq, vocab]`. Write it in closed form
# from `logits` and `masked.labels`: at a selected position it is
# (softmax(logits) − one-hot(label)) / N, where N is the number of selected positions, and 0
# elsewhere. Build that tensor with plain torch operations (no `backward`).

# %% tags=["exercise"]
# BEGIN SOLUTION
probs = logits.detach().softmax(dim=-1)                                   # [batch, seq, vocab]
one_hot = F.one_hot(masked.labels.clamp(min=0), tokenizer.vocab_size).float()
answer_2 = (probs - one_hot) * selected[..., None] / selected.sum()
# END SOLUTION

# %%
check("Exercise 2", answer_2, logits.grad, tolerance=1e-7,
      hint="labels are -100 off the selection; clamp them before one_hot, then zero those rows.")

# %% [markdown]
# ### Exercise 3: a sum instead of a mean
#
# Suppose `masked_cross_entropy` returned the **sum** over the selected positions instead of the
# mean. By what factor would the global gradient norm of this batch grow (before clipping)? Predict
# it as a number from what you know about this batch; the check measures it on the twin model. Then
# think: with `clip_norm = 1`, what would clipping do to almost every step?

# %% tags=["exercise"]
# BEGIN SOLUTION
answer_3 = int(selected.sum())                 # the sum is N × the mean, so its gradient is N × larger
# END SOLUTION


# %%
def gradient_norm(reduction: str) -> float:
    twin.zero_grad(set_to_none=True)
    with sm.eval_mode(twin):
        flat_logits = twin(masked.inputs).flatten(0, 1)
        F.cross_entropy(flat_logits, masked.labels.flatten(), reduction=reduction).backward()
    norm = torch.cat([p.grad.flatten() for p in twin.parameters() if p.grad is not None]).norm().item()
    twin.zero_grad(set_to_none=True)
    return norm


check("Exercise 3", answer_3, gradient_norm("sum") / gradient_norm("mean"), tolerance=1e-3 * answer_3,
      hint="the gradient is linear in the loss: how many times larger than the mean is the sum?")

# %% [markdown]
# (With a sum, the gradient norm would be about 78 times larger, far above 1, so clipping would
# fire on every step and the clip threshold, not the gradient, would set the step length; and a
# batch with more questions would push harder than one with fewer.)
