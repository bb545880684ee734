"""Plots: the figures show exactly the data given, and PNGs are written (no pyplot, no display)."""

import numpy as np
import pytest
import torch

from scratchmlm.harness.config import ModelConfig, RunConfig, TrainConfig
from scratchmlm.errors import ScratchMLMError
from scratchmlm.model import TransformerMLM
from scratchmlm.noam import noam_lr
from scratchmlm.harness.plots import (attention_of_text, plot_attention, plot_attention_grid, plot_attention_grid_of_text,
                              plot_attention_of_text, plot_comparison, plot_noam, plot_training_curves)
from scratchmlm.tokenizer import CharTokenizer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 0
    assert data[:8] == PNG_MAGIC


def synthetic_records():
    train = [{"type": "train", "step": step, "time": 0.1 * step, "loss": 4.0 - 0.01 * step,
              "accuracy": 0.001 * step, "lr": noam_lr(step, 128, 100), "grad_norm": 2.0 / step ** 0.5,
              "tokens_per_second": 9000.0}
             for step in range(10, 301, 10)]
    evals = [{"type": "eval", "step": step, "time": 0.1 * step, "loss": 3.5 - 0.002 * step,
              "top1": 0.1 + 0.0005 * step, "top5": 0.3 + 0.001 * step, "perplexity": 10.0,
              "by_kind": {"mask": {"top1": 0.05 + 0.0004 * step}}, "fingerprint": "abc"}
             for step in (100, 200, 300)]
    baselines = [{"type": "baseline", "name": "unigram", "top1": 0.147, "top5": 0.39, "loss": 3.36},
                 {"type": "baseline", "name": "bigram", "top1": 0.21, "top5": 0.5, "loss": 2.9}]
    unknown = [{"type": "sample", "step": 100, "text": "to be or not"}, {"no_type": True}]
    # Interleave as a real log would: evals after the train record of their step.
    records = baselines + unknown[:1]
    for record in train:
        records.append(record)
        records += [e for e in evals if e["step"] == record["step"]]
    return records + unknown[1:], train, evals


def test_training_curves_plot_the_records(tmp_path):
    records, train, evals = synthetic_records()
    path = tmp_path / "plots" / "curves.png"  # the parent folder does not exist yet
    figure = plot_training_curves(records, path=path)
    assert_png(path)

    assert len(figure.axes) == 4
    loss_axes, accuracy_axes, lr_axes, grad_axes = figure.axes
    train_steps = [r["step"] for r in train]
    eval_steps = [r["step"] for r in evals]

    loss_lines = {line.get_label(): line for line in loss_axes.get_lines()}
    train_loss, valid_loss = loss_lines["training"], loss_lines["validation"]
    np.testing.assert_array_equal(train_loss.get_xdata(), train_steps)
    np.testing.assert_array_equal(train_loss.get_ydata(), [r["loss"] for r in train])
    np.testing.assert_array_equal(valid_loss.get_xdata(), eval_steps)
    np.testing.assert_array_equal(valid_loss.get_ydata(), [r["loss"] for r in evals])

    accuracy_lines = {line.get_label(): line for line in accuracy_axes.get_lines()}
    np.testing.assert_array_equal(accuracy_lines["training top-1"].get_ydata(), [r["accuracy"] for r in train])
    np.testing.assert_array_equal(accuracy_lines["validation top-1"].get_ydata(), [r["top1"] for r in evals])
    np.testing.assert_array_equal(accuracy_lines["validation top-5"].get_ydata(), [r["top5"] for r in evals])
    unigram = accuracy_lines["unigram baseline top-1"]
    assert unigram.get_linestyle() == "--"
    assert list(unigram.get_ydata()) == [0.147, 0.147]

    np.testing.assert_array_equal(lr_axes.get_lines()[0].get_ydata(), [r["lr"] for r in train])
    np.testing.assert_array_equal(grad_axes.get_lines()[0].get_ydata(), [r["grad_norm"] for r in train])
    assert grad_axes.get_yscale() == "log"


def test_training_curves_without_eval_or_path():
    _, train, _ = synthetic_records()
    figure = plot_training_curves(train[:3])
    assert len(figure.axes) == 4
    assert len(figure.axes[0].get_lines()) == 1  # training loss only


def test_training_curves_need_train_records():
    with pytest.raises(ScratchMLMError, match="nothing to plot yet"):
        plot_training_curves([])
    with pytest.raises(ScratchMLMError, match="nothing to plot yet"):
        plot_training_curves([{"type": "baseline", "name": "unigram", "top1": 0.1},
                              {"type": "eval", "step": 0, "loss": 4.0, "top1": 0.0, "top5": 0.1}])


def test_noam_curve_and_peak(tmp_path):
    path = tmp_path / "noam.png"
    figure = plot_noam(d_model=128, warmup=2000, steps=6000, path=path)
    assert_png(path)
    assert len(figure.axes) == 1
    curve, peak = figure.axes[0].get_lines()
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(1, 6001))
    assert curve.get_ydata()[0] == pytest.approx(noam_lr(1, 128, 2000))
    assert curve.get_ydata()[-1] == pytest.approx(noam_lr(6000, 128, 2000))
    assert list(peak.get_xdata()) == [2000]
    assert peak.get_ydata()[0] == pytest.approx(noam_lr(2000, 128, 2000))
    assert "2,000" in figure.axes[0].texts[0].get_text()


def test_attention_heat_map(tmp_path):
    tokens = list("to be,\nor not")
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(len(tokens), len(tokens), generator=generator), dim=-1)
    path = tmp_path / "attention.png"
    figure = plot_attention(weights, tokens, path=path, title="layer 0, head 3")
    assert_png(path)
    assert len(figure.axes) == 2  # the heat map and its colorbar
    axes = figure.axes[0]
    np.testing.assert_allclose(axes.get_images()[0].get_array(), weights.numpy())
    labels = [label.get_text() for label in axes.get_xticklabels()]
    assert labels == ["t", "o", "␣", "b", "e", ",", "⏎", "o", "r", "␣", "n", "o", "t"]
    assert axes.get_title() == "layer 0, head 3"
    # A numpy array works too.
    plot_attention(weights.numpy(), tokens)


def test_attention_shape_mismatch():
    with pytest.raises(ScratchMLMError, match="shape"):
        plot_attention(np.full((4, 4), 0.25), list("abc"))
    with pytest.raises(ScratchMLMError, match="shape"):
        plot_attention(torch.full((2, 3, 3), 1 / 3), list("abc"))


def test_noam_peak_beyond_plotted_steps():
    figure = plot_noam(d_model=128, warmup=2000, steps=500)
    _, peak = figure.axes[0].get_lines()
    assert list(peak.get_xdata()) == [500]  # still rising: the highest plotted rate is the last
    assert "beyond" in figure.axes[0].texts[0].get_text()
    with pytest.raises(ScratchMLMError):
        plot_noam(d_model=128, warmup=2000, steps=0)


# -- what the curves show, given the run's configuration ------------------------------------------

def lines_by_label(axes):
    return {line.get_label(): line for line in axes.get_lines()}


def seed_like_config(warmup=100, clip_norm=0.5, factor=1.0):
    return RunConfig(ModelConfig(d_model=128), TrainConfig(warmup=warmup, clip_norm=clip_norm, noam_factor=factor))


def test_curves_mark_the_clip_norm_with_plain_tick_labels():
    records, _, _ = synthetic_records()
    figure = plot_training_curves(records, config=seed_like_config(clip_norm=0.5))
    grad_axes = figure.axes[3]
    clip = lines_by_label(grad_axes)["clip norm 0.5"]
    assert list(clip.get_ydata()) == [0.5, 0.5] and list(clip.get_xdata()) == [0, 1]   # across the panel
    figure.draw_without_rendering()                  # tick labels exist only once laid out
    low, high = grad_axes.get_ylim()
    labels = [label.get_text() for minor in (False, True)
              for at, label in zip(grad_axes.get_yticks(minor=minor), grad_axes.get_yticklabels(minor=minor))
              if low <= at <= high and label.get_text()]
    assert len(labels) >= 2                          # enough labelled ticks inside the panel to read it
    for label in labels:                             # "0.2", "0.5" -- no 10^x, no 2x10^-1
        assert "$" not in label and "e" not in label, labels
        float(label)
    assert grad_axes.yaxis.get_offset_text().get_text() == ""
    assert grad_axes.get_yscale() == "log"


def test_curves_show_the_baselines_cross_entropy_and_the_mask_accuracy():
    records, _, evals = synthetic_records()
    loss_axes, accuracy_axes, _, _ = plot_training_curves(records, config=seed_like_config()).axes
    loss_lines = lines_by_label(loss_axes)
    assert list(loss_lines["unigram baseline"].get_ydata()) == [3.36, 3.36]
    assert list(loss_lines["bigram infill baseline"].get_ydata()) == [2.9, 2.9]
    mask = lines_by_label(accuracy_axes)["validation top-1, [MASK] only"]
    np.testing.assert_array_equal(mask.get_xdata(), [r["step"] for r in evals])
    np.testing.assert_array_equal(mask.get_ydata(), [r["by_kind"]["mask"]["top1"] for r in evals])


def test_curves_draw_the_schedule_at_every_step_so_a_short_run_shows_its_warm_up():
    # a 30-step run logged every 10 steps: three logged rates, but the warm-up is 20 steps
    train = [{"type": "train", "step": step, "loss": 4.0, "accuracy": 0.1, "lr": noam_lr(step, 64, 20, 0.5),
              "grad_norm": 1.0} for step in (10, 20, 30)]
    config = RunConfig(ModelConfig(d_model=64, num_heads=4), TrainConfig(warmup=20, noam_factor=0.5))
    lr_axes = plot_training_curves(train, config=config).axes[2]
    schedule = lines_by_label(lr_axes)["Noam schedule"]
    steps, rates = schedule.get_xdata(), schedule.get_ydata()
    np.testing.assert_array_equal(steps, np.arange(1, 31))
    np.testing.assert_allclose(rates, [noam_lr(int(s), 64, 20, 0.5) for s in steps], rtol=1e-12)
    assert np.all(np.diff(rates[:20]) > 0) and np.all(np.diff(rates[19:]) < 0)   # up to step 20, then down
    logged = lines_by_label(lr_axes)["logged"]
    np.testing.assert_allclose(logged.get_ydata(), [r["lr"] for r in train])
    assert list(lines_by_label(lr_axes)["end of warm-up (step 20)"].get_xdata()) == [20, 20]


def test_the_schedule_includes_the_large_batch_scaling_the_run_applied():
    # --lr-scaling sqrt on 2 processes of batch 128: global batch 256 = 4 x 64, so the rate doubles;
    # config.json does not say how many processes ran, the logged rates do
    config = RunConfig(ModelConfig(d_model=64, num_heads=4),
                       TrainConfig(warmup=20, noam_factor=0.5, batch_size=128, lr_scaling="sqrt"))
    train = [{"type": "train", "step": step, "loss": 4.0, "accuracy": 0.1, "lr": 2 * noam_lr(step, 64, 20, 0.5),
              "grad_norm": 1.0} for step in (10, 20, 30)]
    lr_axes = plot_training_curves(train, config=config).axes[2]
    rates = lines_by_label(lr_axes)["Noam schedule"].get_ydata()
    np.testing.assert_allclose(rates[[9, 19, 29]], [r["lr"] for r in train], rtol=1e-9)
    assert "factor 1" in lr_axes.get_title()
    # without a scaling the configuration alone sets the schedule, and a log that disagrees shows it
    config.train.lr_scaling = "none"
    lr_axes = plot_training_curves(train, config=config).axes[2]
    rates = lines_by_label(lr_axes)["Noam schedule"].get_ydata()
    np.testing.assert_allclose(rates[[9, 19, 29]], [r["lr"] / 2 for r in train], rtol=1e-9)


def test_save_format_follows_the_extension(tmp_path):
    plot_noam(128, 20, steps=40, path=tmp_path / "noam.svg")
    plot_noam(128, 20, steps=40, path=tmp_path / "noam.pdf")
    plot_noam(128, 20, steps=40, path=tmp_path / "noam")            # no extension: PNG
    assert b"<svg" in (tmp_path / "noam.svg").read_bytes()[:500]
    assert (tmp_path / "noam.pdf").read_bytes()[:5] == b"%PDF-"
    assert_png(tmp_path / "noam")
    with pytest.raises(ScratchMLMError, match=r"\.png, \.svg, \.pdf"):
        plot_noam(128, 20, steps=40, path=tmp_path / "noam.jpg")


# -- several runs in one figure -------------------------------------------------------------------

def test_comparison_overlays_each_runs_curves():
    records, train, evals = synthetic_records()
    other = [dict(r, loss=r["loss"] - 0.5) if r.get("type") in ("train", "eval") else r for r in records]
    figure = plot_comparison({"warm-up 100": (records, seed_like_config(warmup=100)),
                              "warm-up 20": (other, seed_like_config(warmup=20)),
                              "no config": (records, None)})
    loss_axes, valid_axes, accuracy_axes, lr_axes = figure.axes
    assert [line.get_label() for line in loss_axes.get_lines()] == ["warm-up 100", "warm-up 20", "no config"]
    np.testing.assert_allclose(lines_by_label(valid_axes)["warm-up 20"].get_ydata(),
                               [r["loss"] - 0.5 for r in evals])
    accuracy = lines_by_label(accuracy_axes)
    np.testing.assert_array_equal(accuracy["warm-up 100: all"].get_ydata(), [r["top1"] for r in evals])
    mask = accuracy["warm-up 100: [MASK] only"]
    np.testing.assert_array_equal(mask.get_ydata(), [r["by_kind"]["mask"]["top1"] for r in evals])
    assert mask.get_color() == accuracy["warm-up 100: all"].get_color() and mask.get_linestyle() == "--"
    rates = lines_by_label(lr_axes)
    for label, warmup in (("warm-up 100", 100), ("warm-up 20", 20)):
        np.testing.assert_array_equal(rates[label].get_xdata(), np.arange(1, 301))
        assert int(np.argmax(rates[label].get_ydata())) + 1 == warmup        # each run's own peak
    np.testing.assert_array_equal(rates["no config"].get_xdata(), [r["step"] for r in train])
    with pytest.raises(ScratchMLMError, match="'empty' has no training records"):
        plot_comparison({"ok": (records, None), "empty": (records[:2], None)})


# -- attention: one head, and every layer and head in a grid --------------------------------------

def test_attention_grid_places_layer_l_head_h_at_row_l_column_h(tmp_path):
    tokens = list("to be")
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(2, 3, 5, 5, generator=generator), dim=-1)   # [layers, heads, seq, seq]
    path = tmp_path / "attention_grid.png"
    figure = plot_attention_grid(list(weights), tokens, path=path)                  # a list of [heads, seq, seq]
    assert_png(path)
    cells = [axes for axes in figure.axes if axes.get_images()]
    assert len(cells) == 6 and len(figure.axes) == 7          # 2 x 3 heat maps and one shared colorbar
    for index, axes in enumerate(cells):
        layer, head = divmod(index, 3)
        assert axes.get_label() == f"layer {layer}, head {head}"
        np.testing.assert_allclose(axes.get_images()[0].get_array(), weights[layer, head].numpy(), rtol=1e-6)
        assert axes.get_images()[0].get_clim() == pytest.approx((0.0, float(weights.max())))   # one scale
    assert [cells[h].get_title() for h in range(3)] == ["head 0", "head 1", "head 2"]
    assert [cells[3 * layer].get_ylabel() for layer in range(2)] == ["layer 0", "layer 1"]
    with pytest.raises(ScratchMLMError, match="select one batch item"):
        plot_attention_grid([w[None] for w in weights], tokens)     # still [batch, heads, seq, seq]


def test_attention_of_text_names_layer_and_head(small_text):
    tokenizer = CharTokenizer.from_text(small_text)
    torch.manual_seed(0)
    model = TransformerMLM(vocab_size=tokenizer.vocab_size, d_model=16, num_heads=4, num_layers=2, d_ff=32,
                           max_len=16)
    attention, tokens = attention_of_text(model, tokenizer, "the lazy d[MASK]g")
    assert tokens[10] == "[MASK]" and len(attention) == 2 and attention[0].shape == (4, 12, 12)
    one = plot_attention_of_text(model, tokenizer, "the lazy d[MASK]g", layer=1, head=2)
    assert one.axes[0].get_title() == "Attention of layer 1, head 2 (of 2 layers x 4 heads)"
    np.testing.assert_allclose(one.axes[0].get_images()[0].get_array(), attention[1][2].numpy(), rtol=1e-6)
    grid = plot_attention_grid_of_text(model, tokenizer, "the lazy d[MASK]g")
    cell = next(axes for axes in grid.axes if axes.get_label() == "layer 1, head 2")
    np.testing.assert_allclose(cell.get_images()[0].get_array(), attention[1][2].numpy(), rtol=1e-6)
    with pytest.raises(ScratchMLMError, match="--head in 0..3"):
        plot_attention_of_text(model, tokenizer, "the lazy dog", layer=0, head=4)
