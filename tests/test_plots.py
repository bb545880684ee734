"""Plots: the figures show exactly the data given, and PNGs are written (no pyplot, no display)."""

import numpy as np
import pytest
import torch

from scratchmlm.errors import ScratchMLMError
from scratchmlm.noam import noam_lr
from scratchmlm.plots import plot_attention, plot_noam, plot_training_curves

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
              "by_kind": {"mask": {"top1": 0.2}}, "fingerprint": "abc"}
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

    train_loss, valid_loss = loss_axes.get_lines()
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
