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
# # Masked language modelling from scratch
#
# This notebook walks through every piece of scratchmlm once, in the order the data flows:
#
# **corpus → tokenizer → batches → masker → model → loss → training step → samples**
#
# It runs in about a minute on a laptop CPU. The corpus, Tiny Shakespeare, is downloaded on first
# use (or read from `$SCRATCHMLM_DATA_DIR`).

# %%
# %matplotlib inline
import torch

import scratchmlm as sm

torch.manual_seed(0)

# %% [markdown]
# ## 1. The corpus and its split
# The first 90% of the characters train the model; the last 10% are held out for validation.

# %%
text = sm.load_text("tinyshakespeare")
split = sm.split_text(text)
print(f"{len(text):,} characters: {len(split.train):,} for training, {len(split.valid):,} for validation")
print(text[:200])

# %% [markdown]
# ## 2. Characters become ids
# Three special tokens come first — `[PAD]`=0, `[MASK]`=1, `[UNK]`=2 — then every character of the
# corpus in sorted order.

# %%
tokenizer = sm.CharTokenizer.from_text(text)
print(tokenizer, tokenizer.vocab[:10])
ids = tokenizer.encode("To be, or not to be", parse_special=False)
print(ids.tolist())
print(repr(tokenizer.decode(ids)))
train_ids = tokenizer.encode(split.train, parse_special=False)

# %% [markdown]
# ## 3. Random windows make a batch `[batch, seq]`

# %%
batch_rng = torch.Generator().manual_seed(1)
batch = sm.random_windows(train_ids, batch_size=4, seq_len=32, rng=batch_rng)
print(batch.shape)
for row in batch:
    print(repr(tokenizer.decode(row)))

# %% [markdown]
# ## 4. BERT masking
# 15% of positions are *selected*. Of those, 80% become `[MASK]`, 10% a random real character and
# 10% stay unchanged — one uniform draw decides, so the three never overlap. The labels keep the
# original id at selected positions and `-100` (ignored by the loss) everywhere else.

# %%
masker = sm.BertMasker.for_tokenizer(tokenizer)
mask_rng = torch.Generator().manual_seed(2)
masked = masker(batch, mask_rng)
print("model sees:", repr(tokenizer.decode(masked.inputs[0])))
print("original:  ", repr(tokenizer.decode(batch[0])))
print("selected:  ", masked.selected[0].int().tolist())

# %% [markdown]
# On a million positions the rates come out as the definition says:

# %%
many = sm.random_windows(train_ids, 1024, 1024, torch.Generator().manual_seed(3))
big = masker(many, torch.Generator().manual_seed(4))
selected = big.selected
print(f"selected: {selected.float().mean():.4f} (expected 0.15)")
for kind, name in [(1, "[MASK]"), (2, "random"), (3, "unchanged")]:
    share = (big.kinds == kind).sum() / selected.sum()
    print(f"{name:>9}: {share:.4f} of the selected")

# %% [markdown]
# ## 5. The model
# Embeddings (token × √d_model + sinusoidal positions) → 6 encoder layers (multi-head
# self-attention and a feed-forward network, each with a residual connection and LayerNorm) →
# a linear generator to vocabulary logits. Attention is written out in
# `scratchmlm/model/attention.py`: `softmax(Q Kᵀ / √d_k) V`.

# %%
model = sm.TransformerMLM(vocab_size=tokenizer.vocab_size)
print(f"{model.num_parameters():,} parameters")
logits, attention = model(masked.inputs, return_attention=True)
print("logits", tuple(logits.shape), "  attention of layer 0", tuple(attention[0].shape))
print("each attention row sums to 1:", torch.allclose(attention[0].sum(-1), torch.ones(1)))

# %% [markdown]
# ## 6. The learning-rate schedule
# Noam: a linear warm-up, then decay as 1/√step. The peak for d_model 128 and 2000 warm-up steps:

# %%
from scratchmlm.plots import plot_noam

print(f"{sm.noam_lr(2000, d_model=128, warmup=2000):.4e}")
plot_noam(d_model=128, warmup=2000, steps=6000)

# %% [markdown]
# ## 7. The training step
# `train_step` masks, runs the model, scores the selected positions only, back-propagates, clips
# the gradient norm, and steps the optimiser and the schedule. Here, 150 steps with a 100-step
# warm-up and `factor=2.0`: a peak learning rate of 1.77e-2, nine times the seed schedule's
# 1.98e-3, so that the loss visibly moves within a minute. Be warned what 150 steps buy: the
# model learns the character frequencies and little else, so below its accuracy on [MASK]
# positions stays at the unigram baseline's (about 0.15). It takes several hundred steps to start
# using the context: the README's quick run (800 steps) gets past the bigram baseline.

# %%
optimizer = torch.optim.Adam(model.parameters(), betas=(0.9, 0.98), eps=1e-9)
scheduler = sm.NoamScheduler(optimizer, d_model=128, warmup=100, factor=2.0)
for step in range(1, 151):
    ids = sm.random_windows(train_ids, 64, 32, batch_rng)
    result = sm.train_step(model, ids, masker, mask_rng, optimizer, scheduler, clip_norm=1.0)
    if step % 25 == 0:
        print(f"step {step:3d}  loss {result.loss.item():.3f}  "
              f"masked accuracy {int(result.num_correct) / int(result.num_scored):.3f}  lr {result.lr:.2e}")

# %% [markdown]
# ## 8. Honest evaluation
# A frozen validation set — fixed windows with fixed masks, identified by a fingerprint — scored
# beside two baselines that need no neural network.

# %%
from scratchmlm.evaluate import bigram_infill_baseline, evaluate, unigram_baseline

valid_ids = tokenizer.encode(split.valid, parse_special=False)
valid = sm.FrozenValidationSet.build(valid_ids, masker, seq_len=32)
print("fingerprint", valid.fingerprint[:16])
for result in (evaluate(model, valid), bigram_infill_baseline(train_ids, valid, tokenizer.vocab_size, 1),
               unigram_baseline(train_ids, valid, tokenizer.vocab_size)):
    print(result.summary())

# %% [markdown]
# ## 9. Samples, coloured by correctness
# Green fills are right, red ones wrong (the expected character follows in brackets).
# After 150 steps most fills are the commonest characters; a longer run (`scratchmlm train`)
# fills far more of them correctly.

# %%
from scratchmlm.sample import fill_mask, fill_prompts, format_fill_mask

samples = fill_prompts(model, tokenizer, ["To be, or not to be, that is", "Now is the winter of our"],
                       masker, torch.Generator().manual_seed(5))
samples

# %%
print(format_fill_mask("To be, or not to b[MASK]", fill_mask(model, tokenizer, "To be, or not to b[MASK]")))
