"""Pictures of a run: training curves, runs side by side, the Noam schedule, and attention maps.

Every function builds a ``matplotlib.figure.Figure`` directly instead of going through
``pyplot``, so nothing depends on global plotting state: the code works headless (a training
server, CI) and in a notebook, where a returned figure displays itself (with `%matplotlib inline`,
the notebook default). Each function returns its figure and, given ``path``, also saves it there:
as PNG, SVG or PDF, as the file's extension says.

The training curves read the records a run appends to ``metrics.jsonl``::

    {"type": "train", "step": 50, "loss": 3.1, "accuracy": 0.15, "lr": 1e-4, "grad_norm": 0.9, ...}
    {"type": "eval", "step": 500, "loss": 2.5, "top1": 0.3, "top5": 0.6,
     "by_kind": {"mask": {"top1": 0.25, ...}, "random": {...}, "unchanged": {...}}, ...}
    {"type": "baseline", "name": "unigram", "top1": 0.147, "top5": 0.39, "loss": 3.36}

Records of any other type are ignored, so the log can grow new kinds without breaking the plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator, PercentFormatter

from ..errors import ScratchMLMError
from ..evaluate import eval_mode
from ..files import write_atomically
from ..noam import noam_lr
from ..sample import encode_prompt, visible

PNG_DPI = 120
FONT_SIZE = 9

# The file formats a figure can be saved in (chosen by the file's extension).
FORMATS = ("png", "svg", "pdf")

# Line style and legend name of each baseline's horizontal lines (loss and accuracy panels).
BASELINE_STYLES = {"unigram": "--", "bigram": ":"}
BASELINE_NAMES = {"unigram": "unigram", "bigram": "bigram infill"}


def _save(figure: Figure, path: str | Path | None) -> None:
    """Save ``figure`` at ``path`` (creating its folder), if a path is given: PNG, SVG or PDF by
    the extension (PNG when there is none)."""
    if path is None:
        return
    path = Path(path)
    file_format = path.suffix[1:].lower() or "png"
    if file_format not in FORMATS:
        raise ScratchMLMError(f"Cannot save a figure as {path.name}: use the extension "
                              f"{', '.join('.' + f for f in FORMATS)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: figure.savefig(file, format=file_format, dpi=PNG_DPI), "figure")


def _series(records: Iterable[dict], value) -> tuple[list[int], list[float]]:
    """Steps and values for the records that have a value, in order of step. ``value`` is a key
    of the record or a function of it (``mask_top1``).

    A resumed run may log a step twice; the record written last wins.
    """
    read = value if callable(value) else (lambda record: record.get(value))
    by_step = {}
    for record in records:
        number = read(record)
        if number is not None and record.get("step") is not None:
            by_step[int(record["step"])] = float(number)
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]


def mask_top1(record: dict) -> float | None:
    """Top-1 accuracy at the [MASK] positions alone (``by_kind.mask.top1``), ``None`` if absent."""
    return ((record.get("by_kind") or {}).get("mask") or {}).get("top1")


def noam_factor_used(config, train: Iterable[dict] = ()) -> float:
    """The Noam factor a run trained with: ``config.train.noam_factor``, unless ``--lr-scaling``
    raised it for a large global batch. That scaling depends on the number of processes, which
    ``config.json`` does not hold, so it is read off the logged rates: ``lr / noam_lr(step, factor=1)``
    (their median)."""
    if config.train.lr_scaling == "none":
        return config.train.noam_factor
    ratios = [record["lr"] / noam_lr(int(record["step"]), config.model.d_model, config.train.warmup)
              for record in train if record.get("lr") and record.get("step")]
    return float(np.median(ratios)) if ratios else config.train.noam_factor


CURVE_POINTS = 10_000    # a drawn schedule has at most this many points (and two corners)


def sampled_steps(last_step: int, corners: Iterable[int] = ()) -> np.ndarray:
    """Steps ``1..last_step`` to draw a curve at: every step when there are at most ``CURVE_POINTS``,
    else ``CURVE_POINTS`` evenly spaced ones plus the ``corners`` (the warm-up's peak) and the last
    step, so the work is bounded however long the run (``--steps 10**8``)."""
    last_step = max(int(last_step), 1)
    if last_step <= CURVE_POINTS:
        return np.arange(1, last_step + 1)
    spaced = {1 + (last_step - 1) * i // (CURVE_POINTS - 1) for i in range(CURVE_POINTS)}   # exact integers
    steps = sorted(spaced | {int(step) for step in corners if 1 <= step <= last_step})
    return np.array(steps, dtype=np.int64 if last_step < 2 ** 62 else np.float64)   # float: beyond an int64


def _schedule(config, last_step: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The Noam learning rate of ``config`` (with ``factor``) at steps ``1..last_step`` (sampled)."""
    steps = sampled_steps(last_step, [config.train.warmup])
    rates = [noam_lr(int(step), config.model.d_model, config.train.warmup, factor) for step in steps]
    return steps, np.array(rates)


def _plain_log_axis(axes, low: float, high: float) -> None:
    """A log-scaled y axis labelled with plain numbers (0.7, 1, 1.5, 2) rather than powers of ten:
    denser ticks where the values span a narrow range, and no offset text."""
    decades = np.log10(max(high, 1e-12) / max(low, 1e-12))
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda number, _: f"{number:g}"))
    axes.yaxis.set_minor_locator(NullLocator())
    axes.yaxis.set_minor_formatter(NullFormatter())


def _style(axes_list, legends=()) -> None:
    """Grid and font sizes of every panel; a legend on those in ``legends``."""
    for axes in axes_list:
        axes.grid(True, alpha=0.3)
        axes.tick_params(labelsize=FONT_SIZE)
        axes.title.set_fontsize(FONT_SIZE + 1)
        axes.yaxis.label.set_fontsize(FONT_SIZE)
    for axes in legends:
        axes.legend(fontsize=FONT_SIZE - 1, loc="best", framealpha=0.9)


def plot_training_curves(records: list[dict[str, Any]], path: str | Path | None = None, *,
                         config=None) -> Figure:
    """Loss, masked accuracy, learning rate and gradient norm against step, in a 2x2 grid.

    ``records`` are the parsed lines of a run's ``metrics.jsonl``. Given the run's ``config``
    (a ``RunConfig``), the learning-rate panel draws the Noam schedule at every step
    ``1..last step`` (so even a short run shows its warm-up; factor: ``noam_factor_used``) with
    the logged rates as dots, and the gradient-norm panel marks the clip norm; without it, the
    logged rates are drawn and no clip norm. Raises ``ScratchMLMError`` when there is no training
    record yet.
    """
    train = [record for record in records if record.get("type") == "train"]
    evals = [record for record in records if record.get("type") == "eval"]
    baselines = [record for record in records if record.get("type") == "baseline"]
    if not train:
        raise ScratchMLMError("The metrics contain nothing to plot yet: no training records "
                              "(type 'train'). Train for at least one logging interval first.")

    figure = Figure(figsize=(11, 7.5), layout="constrained")
    (loss_axes, accuracy_axes), (lr_axes, grad_axes) = figure.subplots(2, 2, sharex=True)

    # (a) Loss: masked-token cross-entropy on training batches and on the frozen validation set,
    #     with the cross-entropy of the baselines (on the same validation set) a model must beat.
    loss_axes.plot(*_series(train, "loss"), label="training", linewidth=1)
    if evals:
        loss_axes.plot(*_series(evals, "loss"), "o-", label="validation", markersize=3)
    for baseline in baselines:
        name = baseline.get("name", "baseline")
        if baseline.get("loss") is not None:
            loss_axes.axhline(baseline["loss"], color="grey", linewidth=1,
                              linestyle=BASELINE_STYLES.get(name, "-."),
                              label=f"{BASELINE_NAMES.get(name, name)} baseline")
    loss_axes.set_title("(a) Masked-token loss")
    loss_axes.set_ylabel("cross-entropy (nats)")

    # (b) Accuracy at the masked positions: overall, and at the [MASK] positions alone (where the
    #     answer is not in the input), with the baselines a model must beat.
    accuracy_axes.plot(*_series(train, "accuracy"), label="training top-1", linewidth=1)
    if evals:
        accuracy_axes.plot(*_series(evals, "top1"), "o-", label="validation top-1", markersize=3)
        steps, mask = _series(evals, mask_top1)
        if mask:
            accuracy_axes.plot(steps, mask, "D--", label="validation top-1, [MASK] only", markersize=3)
        accuracy_axes.plot(*_series(evals, "top5"), "s-", label="validation top-5", markersize=3)
    for baseline in baselines:
        name = baseline.get("name", "baseline")
        if baseline.get("top1") is not None:
            accuracy_axes.axhline(baseline["top1"], color="grey", linewidth=1,
                                  linestyle=BASELINE_STYLES.get(name, "-."),
                                  label=f"{BASELINE_NAMES.get(name, name)} baseline top-1")
    accuracy_axes.set_title("(b) Masked accuracy")
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))

    # (c) The learning rate: the schedule at every step, and the rate each logged step used.
    last_step = max(int(record.get("step") or 0) for record in train)
    if config is not None:
        warmup, factor = config.train.warmup, noam_factor_used(config, train)
        lr_axes.plot(*_schedule(config, last_step, factor), linewidth=1.2, label="Noam schedule")
        lr_axes.plot(*_series(train, "lr"), ".", color="tab:orange", markersize=4, label="logged")
        if warmup <= last_step:
            lr_axes.axvline(warmup, color="grey", linewidth=1, linestyle=":",
                            label=f"end of warm-up (step {warmup:,})")
        lr_axes.set_title(f"(c) Learning rate (warm-up {warmup:,}, factor {factor:.3g})")
    else:
        lr_axes.plot(*_series(train, "lr"), linewidth=1)
        lr_axes.set_title("(c) Learning rate")
    lr_axes.set_ylabel("learning rate")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    # (d) Gradient norm before clipping, and the clip norm it is scaled down to when above it.
    #     Spikes show instability; a log scale shows the trend.
    steps, norms = _series(train, "grad_norm")
    grad_axes.plot(steps, norms, linewidth=1, label="before clipping")
    shown = [norm for norm in norms if norm > 0]
    if config is not None:
        clip = config.train.clip_norm
        grad_axes.axhline(clip, color="tab:red", linewidth=1, linestyle="--", label=f"clip norm {clip:g}")
        shown.append(clip)
    _plain_log_axis(grad_axes, min(shown, default=0.1), max(shown, default=10.0))
    grad_axes.set_title("(d) Gradient norm before clipping")
    grad_axes.set_ylabel("global L2 norm")

    _style((loss_axes, accuracy_axes, lr_axes, grad_axes),
           legends=(loss_axes, accuracy_axes) + ((lr_axes, grad_axes) if config is not None else ()))
    for axes in (lr_axes, grad_axes):
        axes.set_xlabel("optimizer step", fontsize=FONT_SIZE)

    title = f"Training curves after {last_step:,} steps"
    steps, top1 = _series(evals, "top1")
    if top1:
        best = int(np.argmax(top1))
        title += f" (best validation top-1 {top1[best]:.1%} at step {steps[best]:,})"
    figure.suptitle(title, fontsize=FONT_SIZE + 2)

    _save(figure, path)
    return figure


def plot_comparison(runs: dict[str, tuple[list[dict[str, Any]], Any]], path: str | Path | None = None) -> Figure:
    """Several runs' curves overlaid, one colour per run: training loss, validation
    cross-entropy, validation top-1 (solid) and [MASK]-only top-1 (dashed), learning rate.

    ``runs`` maps a label to ``(records, config)``: the parsed ``metrics.jsonl`` of the run and its
    ``RunConfig`` (or ``None``). With a config the learning rate is the schedule at every step,
    without one the logged rates. Raises ``ScratchMLMError`` for a run without training records.
    """
    if not runs:
        raise ScratchMLMError("plot_comparison needs at least one run.")
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    (loss_axes, valid_axes), (accuracy_axes, lr_axes) = figure.subplots(2, 2, sharex=True)
    for number, (label, (records, config)) in enumerate(runs.items()):
        colour = f"C{number}"
        train = [record for record in records if record.get("type") == "train"]
        evals = [record for record in records if record.get("type") == "eval"]
        if not train:
            raise ScratchMLMError(f"Run {label!r} has no training records (type 'train') to compare yet.")
        loss_axes.plot(*_series(train, "loss"), color=colour, linewidth=1, label=label)
        valid_axes.plot(*_series(evals, "loss"), "o-", color=colour, markersize=3, label=label)
        accuracy_axes.plot(*_series(evals, "top1"), "o-", color=colour, markersize=3, label=f"{label}: all")
        accuracy_axes.plot(*_series(evals, mask_top1), "D--", color=colour, markersize=3,
                           label=f"{label}: [MASK] only")
        if config is not None:
            last_step = max(int(record.get("step") or 0) for record in train)
            lr_axes.plot(*_schedule(config, last_step, noam_factor_used(config, train)), color=colour,
                         linewidth=1.2, label=label)
        else:
            lr_axes.plot(*_series(train, "lr"), ".-", color=colour, linewidth=1, markersize=3, label=label)

    loss_axes.set_title("(a) Training loss (masked-token cross-entropy)")
    loss_axes.set_ylabel("cross-entropy (nats)")
    valid_axes.set_title("(b) Validation cross-entropy")
    valid_axes.set_ylabel("cross-entropy (nats)")
    accuracy_axes.set_title("(c) Validation top-1: all masked positions, [MASK] only")
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    lr_axes.set_title("(d) Learning rate")
    lr_axes.set_ylabel("learning rate")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    _style((loss_axes, valid_axes, accuracy_axes, lr_axes),
           legends=(loss_axes, valid_axes, accuracy_axes, lr_axes))
    for axes in (accuracy_axes, lr_axes):
        axes.set_xlabel("optimizer step", fontsize=FONT_SIZE)
    figure.suptitle(f"{len(runs)} runs compared: " + " vs ".join(runs), fontsize=FONT_SIZE + 2)

    _save(figure, path)
    return figure


def plot_noam(d_model: int, warmup: int, factor: float = 1.0, steps: int = 10000,
              path: str | Path | None = None) -> Figure:
    """The Noam learning rate for steps ``1..steps`` (at most ``CURVE_POINTS`` of them, the peak
    always among them), with its peak marked and annotated.

    The peak falls at ``step == warmup`` (or at the last step, if ``warmup > steps``).
    """
    if steps < 1:
        raise ScratchMLMError(f"plot_noam needs steps >= 1, got {steps}.")
    step_numbers = sampled_steps(steps, [warmup])      # at most ~CURVE_POINTS, the peak among them
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


def plot_attention_grid(attention, tokens: list[str], path: str | Path | None = None,
                        title: str = "") -> Figure:
    """Every head of every layer at once: a grid of heat maps, one row per layer, one column per head.

    ``attention`` holds the weights ``[layers, heads, seq, seq]`` of one sequence: a tensor, an
    array, or a list of per-layer ``[heads, seq, seq]``. All cells share one colour scale (0 to the
    largest weight), so heads can be compared; cell ``(i, j)`` of layer ``l``, head ``h`` is how much
    query position ``i`` attends to key position ``j``. Each cell's axes carries the label
    ``"layer l, head h"``.
    """
    if isinstance(attention, (list, tuple)):
        attention = [w.detach().float().cpu().numpy() if hasattr(w, "detach") else w for w in attention]
    elif hasattr(attention, "detach"):
        attention = attention.detach().float().cpu().numpy()
    weights = np.asarray(attention, dtype=float)
    seq = len(tokens)
    if weights.ndim != 4 or weights.shape[2:] != (seq, seq):
        raise ScratchMLMError(
            f"plot_attention_grid needs the weights of one sequence, shape [layers, heads, seq, seq] with "
            f"seq = {seq} tokens, got shape {list(weights.shape)}. From a model's per-layer "
            f"[batch, heads, seq, seq] weights, select one batch item: [w[0] for w in attention].")
    num_layers, num_heads = weights.shape[:2]

    figure = Figure(figsize=(1.45 * num_heads + 1.3, 1.45 * num_layers + 0.9), layout="constrained")
    grid = figure.subplots(num_layers, num_heads, squeeze=False)
    for layer in range(num_layers):
        for head in range(num_heads):
            axes = grid[layer, head]
            image = axes.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=weights.max(),
                                interpolation="nearest")
            axes.set_label(f"layer {layer}, head {head}")
            axes.set_xticks([])
            axes.set_yticks([])
            if layer == 0:
                axes.set_title(f"head {head}", fontsize=FONT_SIZE)
            if head == 0:
                axes.set_ylabel(f"layer {layer}", fontsize=FONT_SIZE)
    colorbar = figure.colorbar(image, ax=grid, shrink=0.6, aspect=30)
    colorbar.set_label("attention weight (rows: query, columns: key)", fontsize=FONT_SIZE)
    colorbar.ax.tick_params(labelsize=FONT_SIZE - 1)
    text = "".join(visible(token) if len(token) == 1 else token for token in tokens)
    figure.suptitle(title or f"Attention of every layer and head on {text!r}", fontsize=FONT_SIZE + 1)

    _save(figure, path)
    return figure


@torch.no_grad()
def attention_of_text(model, tokenizer, text: str) -> tuple[list[torch.Tensor], list[str]]:
    """Run ``model`` on ``text`` (eval mode): per-layer attention weights ``[heads, seq, seq]`` on
    the CPU, and the tokens of the positions."""
    ids = encode_prompt(tokenizer, model, text)
    with eval_mode(model):
        _, attention = model(ids[None].to(next(model.parameters()).device), return_attention=True)
    return [weights[0].float().cpu() for weights in attention], [tokenizer.pieces[i] for i in ids.tolist()]


def plot_attention_of_text(model, tokenizer, text: str, layer: int = 0, head: int = 0,
                           path: str | Path | None = None) -> Figure:
    """Run ``model`` on ``text`` (eval mode) and draw the attention weights of one layer and head."""
    attention, tokens = attention_of_text(model, tokenizer, text)
    num_layers, num_heads = len(attention), attention[0].shape[0]
    if not (0 <= layer < num_layers and 0 <= head < num_heads):
        raise ScratchMLMError(f"--layer must be in 0..{num_layers - 1} and --head in 0..{num_heads - 1}.")
    return plot_attention(attention[layer][head], tokens, path,
                          title=f"Attention of layer {layer}, head {head} "
                                f"(of {num_layers} layers x {num_heads} heads)")


def plot_attention_grid_of_text(model, tokenizer, text: str, path: str | Path | None = None) -> Figure:
    """Run ``model`` on ``text`` (eval mode) and draw every layer's and head's attention in a grid."""
    attention, tokens = attention_of_text(model, tokenizer, text)
    return plot_attention_grid(attention, tokens, path)
