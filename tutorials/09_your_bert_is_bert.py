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
# # 09 · Your BERT is BERT
#
# Notebooks 01–08 built a BERT-*style* masked language model. This one builds BERT itself, from the
# same modules, and proves it: `scratchmlm train --preset bert` gives a model whose logits equal
# those of Hugging Face's `transformers.BertForMaskedLM` with the same weights, and
# `scratchmlm.harness.hf` converts between the two.
#
# **Learning objectives**
#
# - Name the five things BERT's architecture changes in the seed model, and count what they cost in
#   parameters.
# - Convert a `BertForMaskedLM` into scratchmlm's `BertMLM` and back, and measure the difference of
#   their logits in float64 (it is at the level of rounding).
# - Export a trained run with `scratchmlm export RUN --format transformers` and fill the same masked
#   sentence with `transformers.pipeline("fill-mask")` and with `scratchmlm fill-mask`.
# - Load `bert-base-uncased` into scratchmlm when you are online.
#
# Needs `pip install -e ".[hf]"` (transformers). Everything here runs offline: the BERTs are built
# from a `BertConfig` and randomly initialised, or trained for a few seconds. Runs in about 20 s on
# 2 CPU cores; `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, pipeline
from transformers.utils.logging import disable_progress_bar

import scratchmlm as sm
from scratchmlm.harness.build import build_model
from scratchmlm.harness.config import preset
from scratchmlm.harness.hf import export_transformers, from_transformers, to_transformers
from scratchmlm.model import BertEmbeddings, MaskedLMHead
from scratchmlm.classroom.notebook import FAST, check, show_source, use_threads

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

torch.set_printoptions(precision=4, sci_mode=False)
disable_progress_bar()                      # transformers' own bars when it loads and saves weights

# %% [markdown]
# ## 1. What BERT adds to the seed model
#
# | | seed `TransformerMLM` | `BertMLM` (`--preset bert`) |
# |---|---|---|
# | embeddings | `E[id] * sqrt(d) + P[t]`, sinusoidal `P` | `LayerNorm(E[id] + T[type] + P[t])`, learned `P` and token types `T` |
# | layers | pre-norm: `x + f(LayerNorm(x))`, a final LayerNorm | post-norm: `LayerNorm(x + f(x))`, none after |
# | feed-forward | dropout between its two linear maps | no dropout there (only on sub-layer outputs) |
# | output | one linear map `h W + b` | a transform `LayerNorm(GELU(h W_t + b_t))`, then `E^T` (tied) `+ b` |
# | LayerNorm epsilon | 1e-5 (torch's default) | 1e-12 |
#
# Attention, the feed-forward network and the encoder layer are the very modules of notebooks 03
# and 04: `BertMLM` passes `norm_first=False` to the same `Encoder`. Two small modules are new:

# %%
show_source(BertEmbeddings.forward)
show_source(MaskedLMHead.forward)

# %% [markdown]
# > **Why no `sqrt(d_model)` scale?** The seed model scales its token vectors so that they and the
# > sinusoids are of the same size (notebook 04). BERT's LayerNorm right after the sum resets every
# > vector to mean 0 and variance 1, whatever the tables hold, so a scale would change nothing.
#
# > **Why tie the decoder to the embeddings?** The score of token `v` becomes the dot product of the
# > transformed hidden vector with `v`'s own input vector: a character that *looks like* the context
# > is one the model can *predict* from it. It also saves `vocab x d_model` parameters (8,704 at the
# > seed size, 68 x 128); for bert-base's 30,522 word pieces it is 23 million.
#
# > **Why epsilon 1e-12?** It only keeps the division finite. At 1e-5 a vector whose variance is
# > small is shrunk a little: a different function, and the logits differ by about 1e-6 — far too
# > much for an *exact* equivalence test, which is why the converters carry it over.
#
# The two models at the seed size:

# %%
seed_model = build_model(preset("seed").model, seed=0)
bert_model = build_model(preset("bert").model, seed=0)
print(f"seed TransformerMLM {seed_model.num_parameters():,} parameters")
print(f"BertMLM             {bert_model.num_parameters():,} parameters")
print(bert_model.embeddings)
print(bert_model.head)

# %% [markdown]
# ## 2. The same function as `transformers.BertForMaskedLM`
#
# A small BERT, built offline from a configuration with three heads, every weight moved away from its
# initial value so that nothing hides behind a zero bias or a unit gain. `from_transformers` copies it
# into a `BertMLM`; we feed both a batch with padding and token types 0 and 1.

# %%
config = BertConfig(vocab_size=40, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=48, max_position_embeddings=16)
torch.manual_seed(0)
theirs = BertForMaskedLM(config).double().eval()
with torch.no_grad():
    for parameter in theirs.parameters():
        parameter.add_(0.1 * torch.randn_like(parameter))
ours = from_transformers(theirs)

ids = torch.randint(3, 40, (2, 12))
attention_mask = torch.ones(2, 12, dtype=torch.long)
attention_mask[1, 8:] = 0                                   # the second row: 8 tokens, then padding
ids[attention_mask == 0] = 0
token_types = (torch.arange(12) >= 6).long().expand(2, 12) * attention_mask
with torch.no_grad():
    their_logits = theirs(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_types).logits
    our_logits = ours(ids, key_padding_mask=attention_mask == 0, token_type_ids=token_types)
print(f"logits {list(our_logits.shape)}, largest difference in float64: "
      f"{(our_logits - their_logits).abs().max():.2e}")

back = to_transformers(ours)
print("back in transformers, the decoder is the word embeddings:",
      back.cls.predictions.decoder.weight is back.bert.embeddings.word_embeddings.weight)

# %% tags=["figure"]
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
left.scatter(their_logits.flatten(), our_logits.flatten(), s=4)
left.set(xlabel="transformers.BertForMaskedLM logit", ylabel="scratchmlm BertMLM logit",
         title="every logit of the batch")
right.hist((our_logits - their_logits).flatten().numpy(), bins=40)
right.set(xlabel="difference (float64)", ylabel="logits", title="the differences: rounding")
figure.tight_layout()
plt.show()

# %% [markdown]
# The points lie on the diagonal, and the differences are a few units of float64's last digit
# (about 1e-16): the two compute the same function and only round differently (Hugging Face runs
# attention through `scaled_dot_product_attention`, scratchmlm writes it out). `tests/test_hf.py`
# holds this at 1e-10 in float64 and 1e-5 in float32 for several sizes, and holds the gradient of
# every parameter after a masked-LM loss equal too.
#
# > **Why compare in float64?** In float32 a different order of the same additions already moves the
# > logits by about 1e-7. In float64 that rounding falls to 1e-16, and a real mistake (a swapped
# > query and key, a forgotten epsilon) stands out by ten orders of magnitude.
#
# ## 3. The same sentence, filled by both
#
# Train a tiny BERT for a few seconds, export it for transformers, and fill one masked line both
# ways.

# %%
STEPS = 60 if FAST else 300
run_config = preset("bert")
run_config.model.d_model, run_config.model.num_heads, run_config.model.num_layers = 64, 4, 2
run_config.model.d_ff = 128
run_config.train.steps, run_config.train.warmup, run_config.train.batch_size = STEPS, 100, 32
run_config.train.valid_windows, run_config.train.eval_every, run_config.train.sample_every = 128, STEPS, STEPS
run_dir = Path(tempfile.mkdtemp(prefix="scratchmlm_09_")) / "run"
sm.Trainer(run_config, run_dir, progress=False).train()
exported = export_transformers(run_dir)
print(sorted(path.name for path in exported.iterdir()))

# %%
model, tokenizer, _, _ = sm.load_run(run_dir, "best", "cpu")
text = "To be, or not to b[MASK], that is"
ours_filled = sm.fill_mask(model, tokenizer, text, top_k=5)[0]
fill = pipeline("fill-mask", model=str(exported), device="cpu")
real_characters = tokenizer.vocab[tokenizer.first_real_id:]
their_filled = fill(text, targets=real_characters, top_k=len(real_characters))
total = sum(candidate["score"] for candidate in their_filled)
print(f"{'scratchmlm fill-mask':>24}   {'transformers pipeline':>24}")
for mine, other in zip(ours_filled.candidates, their_filled[:5]):
    print(f"{mine.token!r:>14} {mine.score:.6f}   {other['token_str']!r:>14} {other['score'] / total:.6f}")

# %% [markdown]
# The same five characters with the same probabilities. One detail: the pipeline spreads
# probability over the whole vocabulary, `[PAD]`, `[MASK]` and `[UNK]` included, while scratchmlm's
# `fill_mask` only answers with real characters and renormalises over them. Asked for the real
# characters (`targets=`) and divided by their total, the pipeline's scores are scratchmlm's.
#
# ## 4. bert-base-uncased, when you are online
#
# `from_transformers` takes any `BertForMaskedLM`, also Google's. With `SCRATCHMLM_ONLINE=1` the cell
# below downloads `bert-base-uncased` (440 MB) and fills a word with scratchmlm's copy of it.
# Offline (as here, and in CI) it runs the same lines on the tiny character BERT exported above and
# says so.

# %%
if os.environ.get("SCRATCHMLM_ONLINE") == "1":
    name, sentence = "bert-base-uncased", "The capital of France is [MASK]."
else:
    name, sentence = str(exported), "To be, or not to b[MASK], that is"
    print("offline: using the tiny character BERT exported above; set SCRATCHMLM_ONLINE=1 for bert-base-uncased")
hf_model = BertForMaskedLM.from_pretrained(name).eval()
hf_tokenizer = AutoTokenizer.from_pretrained(name)
scratch_model = from_transformers(hf_model)
encoded = hf_tokenizer(sentence, return_tensors="pt")
with torch.no_grad():
    expected = hf_model(**encoded).logits
    got = scratch_model(encoded["input_ids"], key_padding_mask=encoded["attention_mask"] == 0,
                        token_type_ids=encoded.get("token_type_ids"))
position = int((encoded["input_ids"][0] == hf_tokenizer.mask_token_id).nonzero()[0])
top = F.softmax(got[0, position], dim=-1).topk(5)
print(f"{name}: largest logit difference {(got - expected).abs().max():.1e}")
print("scratchmlm's copy fills the mask with", [hf_tokenizer.decode([i]) for i in top.indices.tolist()])

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: what BERT costs
#
# Section 1 printed the two parameter counts at the seed size. Write the difference
# `BertMLM - TransformerMLM` as a formula in `d` (d_model), `L` (max_len) and `V` (vocabulary):
# list what BERT has that the seed lacks (token types: 2 rows; a learned position table; the
# embedding LayerNorm; the transform's dense layer and LayerNorm) and what the seed has that BERT
# lacks (the final LayerNorm of a pre-norm stack; the generator's weight, which BERT ties, but not its
# bias: BERT has one too). The layers are the same shapes in both.

# %% tags=["exercise"]
d, L, V = 128, 32, 68
# BEGIN SOLUTION
answer_1 = (2 * d + L * d + 2 * d + (d * d + d) + 2 * d) - (2 * d + V * d)
# END SOLUTION
print(f"BERT - seed = {answer_1:,} parameters")

# %%
check("Exercise 1", answer_1, bert_model.num_parameters() - seed_model.num_parameters(),
      hint="token types 2d, positions L*d, two LayerNorms 2d each, the transform d*d + d; minus the "
           "final LayerNorm 2d and the generator's weight V*d")

# %% [markdown]
# ### Exercise 2: split the fused projection by hand
#
# scratchmlm's attention holds `W_q, W_k, W_v` as one `qkv` linear layer (notebook 03); Hugging Face
# keeps `query`, `key` and `value` apart. Take layer 1 of section 2's `ours` and return its three
# weight matrices `[d, d]`, in Hugging Face's order, from `qkv.weight` `[3d, d]`. The check compares
# them with `theirs`.

# %% tags=["exercise"]
def split_qkv(attention):
    # BEGIN SOLUTION
    return list(attention.qkv.weight.chunk(3, dim=0))        # rows [0:d] query, [d:2d] key, [2d:3d] value
    # END SOLUTION


# %%
self_attention = theirs.bert.encoder.layer[1].attention.self
check("Exercise 2", split_qkv(ours.encoder.layers[1].attention),
      [self_attention.query.weight, self_attention.key.weight, self_attention.value.weight],
      hint="qkv(x) is viewed as [batch, seq, 3, heads, d_k]: the first d output rows are the queries, "
           "the next d the keys, the last d the values; chunk the weight in three along dim 0")

# %% [markdown]
# Swap the query and key in your answer and run the check again: it fails. `tests/test_hf.py` plants
# that very bug in the converter and watches the logits and gradients come apart.
