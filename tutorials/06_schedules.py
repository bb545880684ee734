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
# # 06 · Learning-rate schedules
#
# Notebook 05 took one training step apart; one of its inputs was a learning rate that changes
# from step to step. This notebook is about that schedule: the Noam schedule of "Attention Is All
# You Need", which scratchmlm uses (`sm.noam_lr`, `sm.NoamScheduler`). It rises linearly for
# `warmup` steps, then decays as 1/√step.
#
# **Learning objectives**
#
# - Read the Noam formula and predict, for any d_model, warm-up and factor, where the peak falls,
#   how high it is, and what the rate is long after it.
# - Explain, with measurements on the real model, why Adam needs a warm-up: in its first steps
#   its second-moment estimate rests on a handful of gradients, and every weight moves by about
#   the full learning rate whatever its gradient says.
# - Read a run's `metrics.jsonl` with `read_metrics` and compare the two cached 6000-step runs
#   (warm-up 2000 vs warm-up 500, same peak) on validation top-1 and `[MASK]` top-1.
# - Run two schedules side by side and see what skipping the warm-up does to a model.
#
# Runs in about 90 s on a 2-core CPU (torch on one thread); `SCRATCHMLM_FAST=1` for a quicker run.

# %%
# %matplotlib inline
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import scratchmlm as sm
from scratchmlm.harness.config import read_json
from scratchmlm.evaluate import unigram_baseline
from scratchmlm.classroom.notebook import FAST, check, show_source, use_threads
from scratchmlm.harness.plots import plot_noam
from scratchmlm.harness.run_dir import read_metrics

use_threads()       # torch on one thread unless SCRATCHMLM_THREADS says otherwise (tutorials/README.md)

SEQ_LEN = 32
D_MODEL = 128                       # the seed configuration's width
text = sm.load_text("tinyshakespeare")
split = sm.split_text(text)
tokenizer = sm.CharTokenizer.from_text(text)
train_ids = tokenizer.encode(split.train, parse_special=False)
valid_ids = tokenizer.encode(split.valid, parse_special=False)
masker = sm.BertMasker.for_tokenizer(tokenizer)

# %% [markdown]
# ## 1. The Noam schedule
#
# lr(step) = factor · d_model^−½ · min(step^−½, step · warmup^−³ᐟ²)
#
# The two terms of the `min` cross at `step = warmup`: before it the second (a straight line
# through 0) is smaller, after it the first (a 1/√step decay). So the peak is at `warmup`, and its
# height is factor · (d_model · warmup)^−½.

# %%
show_source(sm.noam_lr)
show_source(sm.NoamScheduler.get_lr)

# %% [markdown]
# `NoamScheduler` is an ordinary PyTorch `LRScheduler`: it writes `noam_lr(step)` into every
# parameter group of the optimizer, and each `scheduler.step()` (step 7 of `train_step`) moves it
# on by one. The package draws the seed configuration's schedule (every run writes this figure to
# `plots/noam.png`):

# %% tags=["figure"]
figure = plot_noam(D_MODEL, 2000, steps=6000)
display(figure)

# %% [markdown]
# The whole family: the warm-up sets *where* the peak is and, through the `warmup^−½`, how high;
# d_model scales the whole curve by `d_model^−½`; the factor scales it again. After the peak every
# curve with the same factor and d_model is the *same* 1/√step line, whatever its warm-up.

# %% tags=["figure"]
steps = np.arange(1, 8001)
fig, (warm_ax, width_ax) = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
for warmup in (250, 500, 1000, 2000, 4000):
    rates = [sm.noam_lr(int(s), D_MODEL, warmup) for s in steps]
    warm_ax.plot(steps, rates, label=f"warm-up {warmup}")
    warm_ax.plot(warmup, sm.noam_lr(warmup, D_MODEL, warmup), "ko", markersize=3)
for d_model in (64, 128, 256, 512):
    rates = [sm.noam_lr(int(s), d_model, 2000) for s in steps]
    width_ax.plot(steps, rates, label=f"d_model {d_model}")
    width_ax.plot(2000, sm.noam_lr(2000, d_model, 2000), "ko", markersize=3)
warm_ax.set_title(f"d_model {D_MODEL}, factor 1: varying the warm-up (dots: peaks)")
width_ax.set_title("warm-up 2000, factor 1: varying d_model")
for ax in (warm_ax, width_ax):
    ax.set_xlabel("optimizer step")
    ax.legend()
    ax.grid(alpha=0.3)
warm_ax.set_ylabel("learning rate")
fig.tight_layout()
plt.show()

# %%
print(f"{'d_model':>8} {'warm-up':>8} {'factor':>7} {'peak lr':>10}   factor·(d_model·warmup)^-½")
for d_model, warmup, factor in [(128, 2000, 1.0), (128, 500, 1.0), (128, 500, 0.5), (512, 4000, 1.0)]:
    print(f"{d_model:>8} {warmup:>8} {factor:>7} {sm.noam_lr(warmup, d_model, warmup, factor):>10.3e}   "
          f"{factor * (d_model * warmup) ** -0.5:.3e}")

# %% [markdown]
# The third row is the one to remember: warm-up 500 with factor 0.5 has *exactly* the peak of the
# seed schedule (warm-up 2000, factor 1), reached four times sooner. Section 3 compares two real
# runs with these two schedules.
#
# > **Why shrink the rate with d_model?** A wider model has more weights feeding each output, and
# > Adam moves every weight by about the same amount (section 2), so the same learning rate
# > changes a wider model's outputs more. `d_model^−½` compensates (in part), so that one factor
# > works across widths. The 1/√step decay afterwards is the classic rate for noisy gradients:
# > steps shrink as the model nears a minimum, but slowly enough to keep making progress.

# %% [markdown]
# ## 2. Why warm up? Adam's first steps
#
# Adam keeps two running averages per weight, of the gradient g and of its square g²:
#
# m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   update = −lr · m̂ / (√v̂ + ε)
#
# where m̂ = m / (1 − β₁ᵗ) and v̂ = v / (1 − β₂ᵗ) undo the bias of starting both at zero. The
# ratio u = m̂ / √v̂ is a signal-to-noise ratio: close to ±1 for a weight whose gradient always
# points the same way, close to 0 for a weight whose gradient is noise. That only works once v̂ has
# seen enough gradients. With β₂ = 0.98, v̂ averages over about the last 50 steps; at step t < 50
# it rests on t gradients, and at step 1 on a single one: u = g / |g| = ±1 for **every** weight.
#
# Let us watch it on the real model (the seed configuration, β = (0.9, 0.98), batches of
# `PROBE_BATCH` × 32), training with `sm.train_step` under the seed schedule and reading Adam's
# state after each step.

# %%
PROBE_STEPS, PROBE_BATCH = (8, 16) if FAST else (30, 64)
BETA1, BETA2, EPS = 0.9, 0.98, 1e-9

torch.manual_seed(0)
model = sm.TransformerMLM(tokenizer.vocab_size, d_model=D_MODEL).train()
optimizer = torch.optim.Adam(model.parameters(), lr=0.0, betas=(BETA1, BETA2), eps=EPS)
scheduler = sm.NoamScheduler(optimizer, d_model=D_MODEL, warmup=2000)
batch_rng, mask_rng = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
sample = torch.randperm(model.num_parameters(), generator=torch.Generator().manual_seed(3))[:100_000]

quantiles, jumps, rates, first_ratio = [], [], [], None
previous_v = None
for t in range(1, PROBE_STEPS + 1):
    ids = sm.random_windows(train_ids, PROBE_BATCH, SEQ_LEN, batch_rng)
    result = sm.train_step(model, ids, masker, mask_rng, optimizer, scheduler, clip_norm=1.0)
    state = [optimizer.state[p] for p in model.parameters()]
    m = torch.cat([s["exp_avg"].flatten() for s in state])[sample]
    v = torch.cat([s["exp_avg_sq"].flatten() for s in state])[sample]
    if t == 1:                                     # exercise 2: the raw ratio, before bias correction
        first_ratio = (m.abs() / v.sqrt())[v > 0].median().item()
    m_hat, v_hat = m / (1 - BETA1 ** t), v / (1 - BETA2 ** t)
    seen = v_hat > 0                               # weights that have had a gradient at all
    u = (m_hat / (v_hat.sqrt() + EPS))[seen].abs()
    quantiles.append(torch.quantile(u, torch.tensor([0.1, 0.5, 0.9])).numpy())
    if previous_v is not None:                     # how far each weight's 1/√v̂ moved in one step
        both = seen & (previous_v > 0)
        change = (0.5 * (v_hat[both] / previous_v[both]).log()).abs().exp() - 1
        jumps.append(torch.quantile(change, torch.tensor([0.5, 0.9])).numpy())
    previous_v = v_hat
    rates.append(result.lr)
quantiles, jumps = np.array(quantiles), np.array(jumps)
print(f"|u| at step 1: 10/50/90% = {quantiles[0].round(3)};  at step {PROBE_STEPS}: {quantiles[-1].round(3)}")
print(f"change of 1/√v̂ from step 1 to 2: median {jumps[0, 0]:.0%}, 90th percentile {jumps[0, 1]:.0%}; "
      f"from step {PROBE_STEPS - 1} to {PROBE_STEPS}: {jumps[-1, 0]:.1%}, {jumps[-1, 1]:.1%}")

# %% tags=["figure"]
t = np.arange(1, PROBE_STEPS + 1)
fig, (u_ax, v_ax) = plt.subplots(1, 2, figsize=(13, 4.2))
u_ax.fill_between(t, quantiles[:, 0], quantiles[:, 2], alpha=0.3, label="10th–90th percentile")
u_ax.plot(t, quantiles[:, 1], "o-", markersize=3, label="median")
u_ax.axhline(1, color="grey", linestyle="--", label="|u| = 1: a full-lr step")
u_ax.set_ylim(0, 1.1)
u_ax.set_xlabel("optimizer step t")
u_ax.set_ylabel("|m̂ / √v̂| per weight")
u_ax.set_title("Adam's step per weight, in units of lr")
u_ax.legend(loc="lower left")
v_ax.semilogy(t[1:], jumps[:, 0] * 100, "o-", markersize=3, label="median weight")
v_ax.semilogy(t[1:], jumps[:, 1] * 100, "s-", markersize=3, label="90th percentile")
v_ax.set_xlabel("optimizer step t")
v_ax.set_ylabel("change of 1/√v̂ since step t−1 (%, log scale)")
v_ax.set_title("How much each weight's adaptive rate jumps in one step")
v_ax.legend()
for ax in (u_ax, v_ax):
    ax.grid(alpha=0.3)
fig.suptitle(f"Adam's first {PROBE_STEPS} steps on the seed model (100,000 sampled weights)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Two things to read off. **Left:** at step 1 every weight has |u| = 1 — Adam moves all 800,000
# weights by the full learning rate, including the many whose gradient is pure noise. Within a few
# steps the noisy weights (the lower band) fall to |u| ≈ 0.2 while the consistent ones stay near
# 1: Adam has begun to tell signal from noise. **Right:** the per-weight scale 1/√v̂ — each
# weight's own learning-rate multiplier — jumps by tens of percent (for some weights by a factor of
# several) between the first steps, and settles to changes of a few percent once v̂ averages
# enough gradients.
#
# Now multiply by the schedule. Under the seed schedule the first step uses
# lr = 9.9e-7, so every weight moves by 1e-6, a harmless nudge. Without a warm-up (the peak rate
# from step 1) every weight would move by:

# %%
peak = sm.noam_lr(2000, D_MODEL, 2000)
weight_std = 0.02                                  # the initial std of every linear weight
print(f"warm-up 2000: step-1 move {rates[0]:.1e} per weight")
print(f"no warm-up:   step-1 move {peak:.1e} per weight = {peak / weight_std:.0%} of a typical weight "
      f"(std {weight_std}), decided by one batch")

# %% [markdown]
# > **Why warm up?** Because Adam's step size is "lr per weight" from the very first step, but its
# > estimate of *which* weights deserve it is worst at the very first step. The warm-up keeps the
# > learning rate tiny while v̂ rests on a few gradients, and lets it reach its peak only once the
# > estimates have settled (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and
# > Beyond", make this argument and measure it). It also protects the young network itself: large
# > early steps can throw it into a poor state (for instance one that predicts the character
# > frequencies whatever its input) that a decaying learning rate does not quickly undo. Section 4
# > shows this happen.

# %% [markdown]
# ## 3. Two 6000-step runs: warm-up 2000 vs warm-up 500
#
# The repository keeps the metrics of two full runs of the seed model on a CPU in
# `experiments/results/`: `seed_cpu` (the seed schedule) and `warmup500_cpu` (warm-up 500,
# factor 0.5: the same peak, reached four times sooner). Everything else — data, seed, batches,
# masks, validation set — is identical. We read them back with `read_metrics`, the reader that
# `scratchmlm plot` uses; first, what a `metrics.jsonl` holds:

# %%
RESULTS = Path(sm.__file__).resolve().parents[1] / "experiments" / "results"
runs = {"warm-up 2000 (seed)": RESULTS / "seed_cpu", "warm-up 500, factor 0.5": RESULTS / "warmup500_cpu"}
records = {name: read_metrics(path / "metrics.jsonl") for name, path in runs.items()}
for name, path in runs.items():
    train_config = read_json(path / "config.json", "config")["train"]
    kinds = {kind: sum(r["type"] == kind for r in records[name]) for kind in ("baseline", "train", "eval")}
    print(f"{name}: warmup {train_config['warmup']}, factor {train_config['noam_factor']}, "
          f"{train_config['steps']} steps; records {kinds}")
seed_records = records["warm-up 2000 (seed)"]
for kind in ("baseline", "train", "eval"):
    example = next(r for r in seed_records if r["type"] == kind)
    print(f"\n{kind!r} records have: {sorted(example)}")
print("\nby_kind of an eval record:", {k: sorted(v) for k, v in example["by_kind"].items()})
fingerprints = {r["fingerprint"] for rs in records.values() for r in rs if r["type"] == "eval"}
print("validation fingerprints across both runs:", len(fingerprints), "(the same masked positions throughout)")

# %% [markdown]
# One `baseline` record per baseline (unigram and bigram infill, scored on the same frozen
# validation set), a `train` record every 50 steps (averages over those 50 steps), an `eval`
# record every 500 steps with the overall scores and the scores per kind of selected position
# (`mask`, `random`, `unchanged`). The honest number is `by_kind["mask"]["top1"]`: at an unchanged
# position the answer is visible in the input (notebook 07).


# %% tags=["figure"]
def series(rs, kind, value):
    chosen = [r for r in rs if r["type"] == kind]
    return [r["step"] for r in chosen], [value(r) for r in chosen]


baselines = {r["name"]: r for r in seed_records if r["type"] == "baseline"}
fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
(lr_ax, loss_ax), (top1_ax, mask_ax) = axes
for (name, rs), colour in zip(records.items(), ("tab:blue", "tab:orange")):
    lr_ax.plot(*series(rs, "train", lambda r: r["lr"]), color=colour, label=name)
    loss_ax.plot(*series(rs, "train", lambda r: r["loss"]), color=colour, linewidth=1, label=name)
    top1_ax.plot(*series(rs, "eval", lambda r: 100 * r["top1"]), "o-", color=colour, markersize=4, label=name)
    mask_ax.plot(*series(rs, "eval", lambda r: 100 * r["by_kind"]["mask"]["top1"]), "o-", color=colour,
                 markersize=4, label=name)
for name, style in (("bigram", ":"), ("unigram", "--")):
    top1_ax.axhline(100 * baselines[name]["top1"], color="grey", linestyle=style, label=f"{name} baseline")
    mask_ax.axhline(100 * baselines[name]["by_kind"]["mask"]["top1"], color="grey", linestyle=style,
                    label=f"{name} baseline")
lr_ax.set_title("(a) learning rate (as logged)")
lr_ax.set_ylabel("learning rate")
loss_ax.set_title("(b) training loss (mean over 50 steps)")
loss_ax.set_ylabel("masked cross-entropy (nats)")
top1_ax.set_title("(c) validation top-1, all selected positions")
top1_ax.set_ylabel("top-1 accuracy (%)")
mask_ax.set_title("(d) validation top-1 at [MASK] positions")
mask_ax.set_ylabel("top-1 accuracy (%)")
for ax in axes.flat:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
for ax in (top1_ax, mask_ax):
    ax.set_xlabel("optimizer step")
fig.suptitle("Seed model, 6000 steps on a CPU: the same peak learning rate, reached at step 2000 or at step 500")
fig.tight_layout()
plt.show()

# %%
evals = {name: {r["step"]: r for r in rs if r["type"] == "eval"} for name, rs in records.items()}
seed_evals, short_evals = evals.values()
print(f"{'step':>5}   {'warm-up 2000':>16}   {'warm-up 500':>16}     top-1 / [MASK] top-1")
for step in (500, 1000, 2000, 3000, 4000, 6000):
    cells = [f"{e[step]['top1']:.3f} / {e[step]['by_kind']['mask']['top1']:.3f}" for e in (seed_evals, short_evals)]
    print(f"{step:>5}   {cells[0]:>16}   {cells[1]:>16}")
print(f"bigram baseline: {baselines['bigram']['top1']:.3f} / {baselines['bigram']['by_kind']['mask']['top1']:.3f}")

# %% [markdown]
# The short warm-up **learns sooner**: it is about ten points ahead at steps 500 and 1000, and it
# passes the bigram baseline on `[MASK]` positions several hundred steps earlier. The seed schedule
# spends its first 2000 steps at a rate below the peak, i.e. below what the model could take. But
# look at panel (a) after step 2000: both curves decay as 1/√step with the *same shape*, and the
# seed run's is twice as high (factor 1 against 0.5). The seed run uses that to catch up, and by
# step 6000 the two are within half a point. With enough steps the schedule decides how *soon*,
# more than how *well*.
#
# > **Why not then a warm-up of 1?** The short warm-up worked because 500 steps were still enough
# > for Adam's estimates to settle before the peak. Shorten it to nothing and the very first steps
# > run at the peak rate with Adam's noisiest estimates — the next section tries it.

# %% [markdown]
# ## 4. A live comparison: with and without warm-up
#
# Two short runs of the seed model, identical in everything — initial weights, batches, masks,
# dropout — but the first `WARMUP` steps of the schedule: one has a warm-up of `WARMUP` steps, the
# other of 1 step, i.e. none. Both use factor 0.5, so from step `WARMUP` on their learning rates
# are equal (to rounding); any difference afterwards was caused in the first `WARMUP` steps.

# %%
LIVE_STEPS, WARMUP, LIVE_BATCH = (80, 25, 16) if FAST else (300, 100, 32)
FACTOR = 0.5
valid = sm.FrozenValidationSet.build(valid_ids, masker, SEQ_LEN, num_windows=256)


def live_run(warmup: int) -> dict:
    """Train the seed model for LIVE_STEPS steps with a Noam warm-up of ``warmup``; same seeds every run."""
    torch.manual_seed(0)
    model = sm.TransformerMLM(tokenizer.vocab_size, d_model=D_MODEL).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0, betas=(BETA1, BETA2), eps=EPS)
    scheduler = sm.NoamScheduler(optimizer, d_model=D_MODEL, warmup=warmup, factor=FACTOR)
    batch_rng, mask_rng = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    torch.manual_seed(3)                                                   # dropout
    losses, rates = [], []
    for _ in range(LIVE_STEPS):
        ids = sm.random_windows(train_ids, LIVE_BATCH, SEQ_LEN, batch_rng)
        result = sm.train_step(model, ids, masker, mask_rng, optimizer, scheduler, clip_norm=1.0)
        losses.append(result.loss.item())
        rates.append(result.lr)
    return {"losses": np.array(losses), "rates": np.array(rates), "eval": sm.evaluate(model, valid)}


live = {f"warm-up {WARMUP}": live_run(WARMUP), "no warm-up (warm-up 1)": live_run(1)}
unigram = unigram_baseline(train_ids, valid, tokenizer.vocab_size)
print(f"same learning rate from step {WARMUP} on (to rounding):",
      np.allclose(*(run["rates"][WARMUP - 1:] for run in live.values()), rtol=1e-12, atol=0))
for name, run in live.items():
    scores = run["eval"]
    print(f"{name:>24}: last-50-step loss {run['losses'][-50:].mean():.3f}; validation top-1 "
          f"{scores.overall.top1:.3f}, [MASK] top-1 {scores.by_kind['mask'].top1:.3f}")
print(f"{'unigram baseline':>24}: validation loss {unigram.overall.loss:.3f}; top-1 {unigram.overall.top1:.3f}, "
      f"[MASK] top-1 {unigram.by_kind['mask'].top1:.3f}")
first_lr = live["no warm-up (warm-up 1)"]["rates"][0]
print(f"no warm-up, step 1: lr {first_lr:.3f}, i.e. every weight moves by {first_lr / 0.02:.1f}× the initial "
      f"weight std 0.02; the largest training loss of that run: {live['no warm-up (warm-up 1)']['losses'].max():.2f}")

# %% tags=["figure"]
t = np.arange(1, LIVE_STEPS + 1)
smooth = 10
fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 2]})
for (name, run), colour in zip(live.items(), ("tab:blue", "tab:red")):
    loss_ax.plot(t, run["losses"], color=colour, alpha=0.25, linewidth=0.8)
    running = np.convolve(run["losses"], np.ones(smooth) / smooth, mode="valid")
    loss_ax.plot(t[smooth - 1:], running, color=colour, label=f"{name} ({smooth}-step mean)")
    lr_ax.semilogy(t, run["rates"], color=colour, label=name)
loss_ax.axhline(unigram.overall.loss, color="grey", linestyle="--", label="unigram baseline (validation loss)")
for ax in (loss_ax, lr_ax):
    ax.axvline(WARMUP, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
loss_ax.set_ylim(2.5, max(run["losses"].max() for run in live.values()) + 0.3)
loss_ax.set_ylabel("training loss (nats)")
loss_ax.set_title("Training loss: identical runs except the first steps' learning rate")
lr_ax.set_ylabel("learning rate (log scale)")
lr_ax.set_title(f"The two schedules: equal from step {WARMUP} (dotted line) on")
fig.tight_layout()
plt.show()

# %% [markdown]
# The run without warm-up starts with an Adam step of 0.044 per weight — about twice the typical
# size of a weight — decided by one batch, then a few more nearly as big. Its loss jumps well above
# a uniform guess's 4.2, falls back to about the unigram baseline's level and stays there: the
# model predicts the character frequencies and ignores the context (its validation top-1 is the
# unigram baseline's). The warm-up run keeps going down and ends ahead on validation top-1, even
# though for most of the run both used the same learning rates. The first steps did damage that
# the later, equal steps do not undo — at least not within this run.
#
# > **Why is the seed warm-up as long as 2000?** It follows the original transformer, which warmed
# > up for 4000 steps (with a larger model and batch): a value chosen to be safe rather than
# > fast. Section 3 showed that 500 steps would have done for this model, section 4 that 1 is too
# > few. Between "too short: unstable" and "too long: slow" lies a wide, safe range, and a
# > schedule is usually tuned by trying a few points of it, as the two cached runs did.

# %% [markdown]
# ## Exercises

# %% [markdown]
# ### Exercise 1: the same peak, sooner
#
# The `warmup500_cpu` run wanted the seed schedule's peak (d_model 128, warm-up 2000, factor 1)
# with a warm-up of 500. Which factor gives that? And at step 4000, long after both peaks, how many
# times larger is the seed schedule's learning rate than the warm-up-500 schedule's? Answer with
# the formula, not by trying values.

# %% tags=["exercise"]
# BEGIN SOLUTION
same_peak_factor = math.sqrt(500 / 2000)       # factor · (d·w)^-½ equal  →  factor = √(500/2000)
ratio_at_4000 = 1 / same_peak_factor           # after the peak lr = factor · d^-½ · step^-½
answer_1 = (same_peak_factor, ratio_at_4000)
# END SOLUTION

# %%
stored_factor = read_json(runs["warm-up 500, factor 0.5"] / "config.json", "config")["train"]["noam_factor"]
check("Exercise 1", answer_1,
      (stored_factor, sm.noam_lr(4000, D_MODEL, 2000) / sm.noam_lr(4000, D_MODEL, 500, stored_factor)),
      tolerance=1e-9, hint="peak = factor·(d_model·warmup)^-½; after the peak the warm-up drops out of the formula.")

# %% [markdown]
# ### Exercise 2: Adam without bias correction
#
# Adam starts m and v at zero, so after one step m = (1 − β₁) g and v = (1 − β₂) g². Without the
# bias correction the first update would be lr · m / √v instead of lr · sign(g). Predict |m / √v|
# after step 1 for β = (0.9, 0.98); the check compares it with the median over the real model's
# weights, read from the optimizer state in section 2. (Then: what would it be with PyTorch's
# default β₂ = 0.999, and what does that say about the bias correction's role in the first steps?)

# %% tags=["exercise"]
# BEGIN SOLUTION
answer_2 = (1 - BETA1) / math.sqrt(1 - BETA2)    # 0.1 / √0.02 ≈ 0.71 (with β₂ = 0.999: 3.2)
# END SOLUTION

# %%
check("Exercise 2", answer_2, first_ratio, tolerance=1e-3,
      hint="|(1 − β₁) g| / √((1 − β₂) g²): the g cancels.")

# %% [markdown]
# (With β₂ = 0.999 the uncorrected first step would be 3.2 times the learning rate, not 1: the
# correction stops the first steps from being even larger than later ones, but it cannot make
# them well-informed — that is the warm-up's job.)

# %% [markdown]
# ### Exercise 3: when do the live schedules agree?
#
# In section 4 the two schedules (factor 0.5, d_model 128, warm-up `WARMUP` and warm-up 1) were
# said to be equal from step `WARMUP` on. Give the first step at which they are equal, and the
# ratio lr(no warm-up) / lr(warm-up) at step 1 as a formula in `WARMUP`.

# %% tags=["exercise"]
# BEGIN SOLUTION
first_equal_step = WARMUP                       # both are factor·d^-½·step^-½ from step = warmup on
ratio_at_step_1 = WARMUP ** 1.5                 # 1^-½ against 1·WARMUP^-1.5
answer_3 = (first_equal_step, ratio_at_step_1)
# END SOLUTION

# %%
no_warmup, warmup_rates = live["no warm-up (warm-up 1)"]["rates"], live[f"warm-up {WARMUP}"]["rates"]
measured_first_equal = int(np.flatnonzero(np.isclose(no_warmup, warmup_rates, rtol=1e-12, atol=0))[0]) + 1
check("Exercise 3", answer_3, (measured_first_equal, no_warmup[0] / warmup_rates[0]), tolerance=1e-6 * WARMUP ** 1.5,
      hint="for step < warmup the warm-up branch step·warmup^-1.5 is the smaller one of the min.")
