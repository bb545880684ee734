"""`scratchmlm plot --format` and `scratchmlm compare` (called in-process, ``run_cli``), on runs that ship
with the repository.

The figures are checked by what they contain: matplotlib writes every text of a figure into an SVG
as a comment (``<!-- clip norm 1 -->``), so a test can read the titles and legends back.
"""

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scratchmlm" / "demo"                         # 6 layers x 8 heads, warm-up 500, 2500 steps
SEED_RUN = REPO / "experiments" / "results" / "seed_cpu"     # config.json + metrics.jsonl, warm-up 2000
WARMUP500_RUN = REPO / "experiments" / "results" / "warmup500_cpu"


def svg_texts(path: Path) -> list[str]:
    """The texts drawn in an SVG written by matplotlib."""
    content = path.read_text()
    assert content.startswith("<?xml") and "<svg" in content
    return re.findall(r"<!-- (.*?) -->", content)


@pytest.mark.slow
def test_plot_writes_every_figure_in_the_chosen_format(run_cli, tmp_path):
    run = tmp_path / "demo"
    shutil.copytree(DEMO, run)
    result = run_cli("plot", run, "--format", "svg", "--layer", 2, "--head", 3,
                     "--prompt", "To be, or not to b[MASK], that is")
    assert result.returncode == 0, result.stderr
    names = ["curves.svg", "noam.svg", "attention_layer2_head3.svg", "attention_grid.svg"]
    assert result.stdout.split() == [str(run / "plots" / name) for name in names]
    assert sorted(path.name for path in (run / "plots").iterdir()) == sorted(names)

    curves = svg_texts(run / "plots" / "curves.svg")
    for text in ["clip norm 1", "unigram baseline", "bigram infill baseline", "validation top-1, [MASK] only",
                 "Noam schedule", "end of warm-up (step 500)"]:
        assert text in curves, text
    one_head = svg_texts(run / "plots" / "attention_layer2_head3.svg")
    assert "Attention of layer 2, head 3 (of 6 layers x 8 heads)" in one_head
    grid = svg_texts(run / "plots" / "attention_grid.svg")
    assert [f"layer {layer}" for layer in range(6)] == [t for t in grid if t.startswith("layer ")]
    assert [f"head {head}" for head in range(8)] == [t for t in grid if t.startswith("head ")]


def test_compare_overlays_two_schedules(run_cli, tmp_path):
    out = tmp_path / "schedules.svg"
    result = run_cli("compare", SEED_RUN, WARMUP500_RUN, "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    texts = svg_texts(out)
    for label in ["seed_cpu", "warmup500_cpu", "seed_cpu: [MASK] only", "warmup500_cpu: all"]:
        assert label in texts, label               # each run labelled by its directory name
    assert "(d) Learning rate" in texts and "(b) Validation cross-entropy" in texts


def test_compare_with_labels_and_a_format_writes_compare_dot_format(run_cli, tmp_path):
    result = run_cli("compare", SEED_RUN, WARMUP500_RUN, "--labels", "warm-up 2000", "warm-up 500", "--format", "svg",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compare.svg"
    texts = svg_texts(tmp_path / "compare.svg")
    assert "warm-up 2000: [MASK] only" in texts and "warm-up 500: all" in texts and "seed_cpu" not in texts


@pytest.mark.parametrize("arguments, fragment", [
    (["{empty}", SEED_RUN], "{empty} is not a scratchmlm run directory (no config.json)"),
    ([SEED_RUN, "{empty}/nope"], "{empty}/nope does not exist"),
    ([SEED_RUN], "at least two run directories"),
    ([SEED_RUN, WARMUP500_RUN, "--labels", "a"], "--labels gave 1 labels for 2 runs"),
    ([SEED_RUN, WARMUP500_RUN, "--labels", "a", "a"], "--labels must all differ"),
    ([SEED_RUN, WARMUP500_RUN, "--out", "{empty}/c.png", "--format", "svg"], ".png but --format is svg"),
    ([SEED_RUN, WARMUP500_RUN, "--out", "{empty}/c.jpg"], "use .png, .svg or .pdf"),
])
def test_compare_refuses_bad_arguments(run_cli, tmp_path, arguments, fragment):
    """One line saying what is wrong, and no figure."""
    result = run_cli("compare", *[str(a).format(empty=tmp_path) for a in arguments])
    assert result.returncode == 2 and result.stdout == ""
    error = result.stderr.strip()
    assert error.startswith("scratchmlm: error: ") and "\n" not in error, error
    assert fragment.format(empty=tmp_path) in error, error
    assert list(tmp_path.iterdir()) == []                   # nothing written
