"""Pictures of a run: training curves, the Noam schedule, and attention maps.

Every function builds a ``matplotlib.figure.Figure`` directly instead of going through
``pyplot``, so nothing depends on global plotting state: the code works headless (a training
server, CI) and in a notebook, where a returned figure displays itself (with `%matplotlib inline`,
the notebook default). Each function returns its
figure and, given ``path``, also saves it there as a PNG.

The training curves read the records a run appends to ``metrics.jsonl``::

    {"type": "train", "step": 50, "loss": 3.1, "accuracy": 0.15, "lr": 1e-4, "grad_norm": 0.9, ...}
    {"type": "eval", "step": 500, "loss": 2.5, "top1": 0.3, "top5": 0.6, ...}
    {"type": "baseline", "name": "unigram", "top1": 0.147, "top5": 0.39, "loss": 3.36}

Records of any other type are ignored, so the log can grow new kinds without breaking the plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from .errors import ScratchMLMError
from .evaluate import eval_mode
from .noam import noam_lr
from .sample import encode_prompt, visible

PNG_DPI = 120
FONT_SIZE = 9

# Line style of each baseline's horizontal line on the accuracy panel.
BASELINE_STYLES = {"unigram": "--", "bigram": ":"}


def _save(figure: Figure, path: str | Path | None) -> None:
    """Save ``figure`` as a PNG at ``path`` (creating its folder), if a path is given."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=PNG_DPI)


def _series(records: Iterable[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of ``key`` for the records that have it, in order of step.

    A resumed run may log a step twice; the record written last wins.
    """
    by_step = {}
    for record in records:
        if record.get(key) is not None and record.get("step") is not None:
            by_step[int(record["step"])] = float(record[key])
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]


def plot_training_curves(records: list[dict[str, Any]], path: str | Path | None = None) -> Figure:
    """Loss, masked accuracy, learning rate and gradient norm against step, in a 2x2 grid.

    ``records`` are the parsed lines of a run's ``metrics.jsonl``. Raises ``ScratchMLMError``
    when there is no training record yet.
    """
    train = [record for record in records if record.get("type") == "train"]
    evals = [record for record in records if record.get("type") == "eval"]
    baselines = [record for record in records if record.get("type") == "baseline"]
    if not train:
        raise ScratchMLMError("The metrics contain nothing to plot yet: no training records "
                              "(type 'train'). Train for at least one logging interval first.")

    figure = Figure(figsize=(11, 7.5), layout="constrained")
    (loss_axes, accuracy_axes), (lr_axes, grad_axes) = figure.subplots(2, 2, sharex=True)

    # (a) Loss: masked-token cross-entropy on training batches and on the frozen validation set.
    loss_axes.plot(*_series(train, "loss"), label="training", linewidth=1)
    if evals:
        loss_axes.plot(*_series(evals, "loss"), "o-", label="validation", markersize=3)
    loss_axes.set_title("(a) Masked-token loss")
    loss_axes.set_ylabel("cross-entropy (nats)")

    # (b) Accuracy at the masked positions, with the baselines a model must beat.
    accuracy_axes.plot(*_series(train, "accuracy"), label="training top-1", linewidth=1)
    if evals:
        accuracy_axes.plot(*_series(evals, "top1"), "o-", label="validation top-1", markersize=3)
        accuracy_axes.plot(*_series(evals, "top5"), "s-", label="validation top-5", markersize=3)
    for baseline in baselines:
        name = baseline.get("name", "baseline")
        if baseline.get("top1") is not None:
            accuracy_axes.axhline(baseline["top1"], color="grey", linewidth=1,
                                  linestyle=BASELINE_STYLES.get(name, "-."),
                                  label=f"{name} baseline top-1")
    accuracy_axes.set_title("(b) Masked accuracy")
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))

    # (c) The learning rate the optimizer used at each step (the Noam schedule).
    lr_axes.plot(*_series(train, "lr"), linewidth=1)
    lr_axes.set_title("(c) Learning rate")
    lr_axes.set_ylabel("learning rate")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    # (d) Gradient norm before clipping: spikes show instability, a log scale shows the trend.
    grad_axes.plot(*_series(train, "grad_norm"), linewidth=1)
    grad_axes.set_yscale("log")
    grad_axes.set_title("(d) Gradient norm before clipping")
    grad_axes.set_ylabel("global L2 norm")

    for axes in (loss_axes, accuracy_axes, lr_axes, grad_axes):
        axes.grid(True, alpha=0.3)
        axes.tick_params(labelsize=FONT_SIZE)
        axes.title.set_fontsize(FONT_SIZE + 1)
        axes.yaxis.label.set_fontsize(FONT_SIZE)
    for axes in (loss_axes, accuracy_axes):
        axes.legend(fontsize=FONT_SIZE - 1, loc="best", framealpha=0.9)
    for axes in (lr_axes, grad_axes):
        axes.set_xlabel("optimizer step", fontsize=FONT_SIZE)

    last_step = max(_series(train, "loss")[0] or [int(train[-1].get("step", 0))])
    title = f"Training curves after {last_step:,} steps"
    steps, top1 = _series(evals, "top1")
    if top1:
        best = int(np.argmax(top1))
        title += f" (best validation top-1 {top1[best]:.1%} at step {steps[best]:,})"
    figure.suptitle(title, fontsize=FONT_SIZE + 2)

    _save(figure, path)
    return figure


def plot_noam(d_model: int, warmup: int, factor: float = 1.0, steps: int = 10000,
              path: str | Path | None = None) -> Figure:
    """The Noam learning rate for steps ``1..steps``, with its peak marked and annotated.

    The peak falls at ``step == warmup`` (or at the last step, if ``warmup > steps``).
    """
    if steps < 1:
        raise ScratchMLMError(f"plot_noam needs steps >= 1, got {steps}.")
    step_numbers = np.arange(1, steps + 1)
    rates = np.array([noam_lr(int(step), d_model, warmup, factor) for step in step_numbers])
    peak = int(np.argmax(rates))
    peak_step, peak_rate = int(step_numbers[peak]), float(rates[peak])

    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    axes.plot(step_numbers, rates, linewidth=1.5, label="learning rate")
    axes.plot([peak_step], [peak_rate], "o", color="tab:red", label="peak", clip_on=False)
    label = f"peak: step {peak_step:,}\nlr {peak_rate:.3e}"
    if warmup > steps:
        label += f"\n(warmup {warmup:,} lies beyond the plot)"
    on_the_left = peak_step > 0.6 * steps  # keep the label inside the axes
    axes.annotate(label, xy=(peak_step, peak_rate), xytext=(-18 if on_the_left else 18, 6),
                  textcoords="offset points", ha="right" if on_the_left else "left", va="bottom",
                  fontsize=FONT_SIZE,
                  arrowprops={"arrowstyle": "->", "color": "grey"})
    axes.set_title(f"Noam schedule (d_model={d_model}, warmup={warmup:,}, factor={factor:g})",
                   fontsize=FONT_SIZE + 1)
    axes.set_xlabel("optimizer step", fontsize=FONT_SIZE)
    axes.set_ylabel("learning rate", fontsize=FONT_SIZE)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes.tick_params(labelsize=FONT_SIZE)
    axes.set_xlim(0, steps)
    axes.set_ylim(0, peak_rate * 1.35 or 1.0)  # headroom for the annotation above the peak
    axes.grid(True, alpha=0.3)

    _save(figure, path)
    return figure


def plot_attention(weights, tokens: list[str], path: str | Path | None = None,
                   title: str = "") -> Figure:
    """A heat map of one head's attention weights ``[seq, seq]``.

    Row ``i`` is query position ``i``, column ``j`` key position ``j``; cell ``(i, j)`` is how much
    position ``i`` attends to position ``j``, so every row sums to 1. ``weights`` may be a torch
    tensor or a numpy array; ``tokens`` labels the positions.
    """
    if hasattr(weights, "detach"):  # a torch tensor, possibly on a GPU or requiring grad
        weights = weights.detach().float().cpu().numpy()
    weights = np.asarray(weights, dtype=float)
    seq = len(tokens)
    if weights.shape != (seq, seq):
        raise ScratchMLMError(
            f"plot_attention needs one head's weights of shape [seq, seq] = [{seq}, {seq}] to "
            f"match the {seq} tokens, got shape {list(weights.shape)}. Select a single batch "
            f"item and head first, e.g. weights[0, head].")

    labels = [visible(token) for token in tokens]   # newline, space, tab as symbols
    figure = Figure(figsize=(max(4.0, 0.22 * seq + 2.0), max(3.5, 0.22 * seq + 1.2)),
                    layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8)
    colorbar.set_label("attention weight", fontsize=FONT_SIZE)
    colorbar.ax.tick_params(labelsize=FONT_SIZE - 1)

    label_size = FONT_SIZE if seq <= 40 else FONT_SIZE - 2
    axes.set_xticks(range(seq), labels, fontsize=label_size)
    axes.set_yticks(range(seq), labels, fontsize=label_size)
    for tick_label in axes.get_xticklabels():  # stand multi-character tokens such as [MASK] up
        if len(tick_label.get_text()) > 1:
            tick_label.set_rotation(90)
    axes.set_xlabel("key position (attended to)", fontsize=FONT_SIZE)
    axes.set_ylabel("query position (attending)", fontsize=FONT_SIZE)
    axes.set_title(title or "Attention weights", fontsize=FONT_SIZE + 1)

    _save(figure, path)
    return figure


@torch.no_grad()
def plot_attention_of_text(model, tokenizer, text: str, layer: int = 0, head: int = 0,
                           path: str | Path | None = None) -> Figure:
    """Run ``model`` on ``text`` (eval mode) and draw the attention weights of one layer and head."""
    ids = encode_prompt(tokenizer, model, text)
    with eval_mode(model):
        _, attention = model(ids[None].to(next(model.parameters()).device), return_attention=True)
    num_layers, num_heads = len(attention), attention[0].shape[1]    # each [1, heads, seq, seq]
    if not (0 <= layer < num_layers and 0 <= head < num_heads):
        raise ScratchMLMError(f"--layer must be in 0..{num_layers - 1} and --head in 0..{num_heads - 1}.")
    tokens = [tokenizer.vocab[i] for i in ids.tolist()]
    return plot_attention(attention[layer][0, head], tokens, path, title=f"layer {layer}, head {head}")
