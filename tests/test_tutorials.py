"""The tutorial notebooks: in sync with their jupytext sources, shaped as lessons, and executed.

CI runs every notebook in fast mode (``SCRATCHMLM_FAST=1``) and fails one that raises, whose
figure cell shows no figure, whose exercise check fails with the reference answer, or that runs
past its budget. The notebooks put torch on one thread (``use_threads()``), which holds its speed
when another job shares the cores; two threads made notebook 06 collapse from 66 s to over 8 minutes. ``SCRATCHMLM_TUTORIALS=full pytest tests/test_tutorials.py`` runs them as a
learner does, without fast mode, against the same budgets.
"""

import os
import re
import time
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
FULL = os.environ.get("SCRATCHMLM_TUTORIALS", "") == "full"

# Seconds on 2 CPU cores with torch on one thread (what use_threads() sets unless SCRATCHMLM_THREADS
# says otherwise), kernel start included (tutorials/README.md lists the same, and the measurements).
BUDGETS = {
    "01_characters_and_windows": 15,
    "02_the_mlm_objective": 15,
    "03_attention_from_scratch": 15,
    "04_embeddings_and_the_encoder_block": 30,
    "05_loss_and_the_training_step": 60,
    "06_schedules": 120,
    "07_train_and_evaluate_honestly": 240,
    "08_inside_a_trained_model": 30,
    "09_your_bert_is_bert": 45,
}
SERIES_BUDGET = 600
NOTEBOOKS = [TUTORIALS / f"{name}.ipynb" for name in BUDGETS]


def notebook_tools():
    """jupytext and nbformat: dev-only (pip install -e ".[dev]"); without them these tests skip."""
    return pytest.importorskip("jupytext"), pytest.importorskip("nbformat")


def cells(notebook):
    _, nbformat = notebook_tools()
    return nbformat.read(notebook, as_version=4).cells


def test_the_series_is_complete_and_within_its_total_budget():
    present = sorted(path.stem for path in TUTORIALS.glob("[0-9][0-9]_*.py"))
    assert present == sorted(BUDGETS), "tutorials/ and BUDGETS disagree"
    assert sum(BUDGETS.values()) <= SERIES_BUDGET


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem[:2])
def test_notebook_matches_its_source_and_has_no_outputs(notebook):
    jupytext, nbformat = notebook_tools()
    source = jupytext.read(notebook.with_suffix(".py"))
    paired = nbformat.read(notebook, as_version=4)

    def content(nb):
        return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]

    assert content(paired) == content(source), f"run: jupytext --sync {notebook.with_suffix('.py')}"
    for cell in paired.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{notebook.name} is committed with outputs; clear them (jupytext --sync rewrites it)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem[:2])
def test_notebook_is_shaped_as_a_lesson(notebook):
    """Objectives first, a "Why" box for its design choices, 2-3 exercises each with a check."""
    nb_cells = cells(notebook)
    markdown = [c.source for c in nb_cells if c.cell_type == "markdown"]
    assert "Learning objectives" in markdown[0], "the first cell must state the learning objectives"
    assert any(re.match(r"> \*\*Why", text.strip()) for text in markdown), "no '> **Why ...**' box"
    exercises = [i for i, c in enumerate(nb_cells) if "exercise" in c.metadata.get("tags", [])]
    assert 2 <= len(exercises) <= 3, f"{len(exercises)} exercise cells (tag 'exercise'); want 2-3"
    for index in exercises:
        source = nb_cells[index].source
        assert "# BEGIN SOLUTION" in source and "# END SOLUTION" in source, "exercise without solution markers"
        following = "\n".join(c.source for c in nb_cells[index + 1:index + 3] if c.cell_type == "code")
        assert "check(" in source + following, "an exercise whose answer no cell checks"
    assert any("figure" in c.metadata.get("tags", []) for c in nb_cells), "no cell tagged 'figure'"


def test_use_threads_takes_one_thread_unless_told_otherwise(monkeypatch):
    import torch

    from scratchmlm.errors import ScratchMLMError
    from scratchmlm.classroom.notebook import use_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("SCRATCHMLM_THREADS", raising=False)
        assert use_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SCRATCHMLM_THREADS", "2")
        assert use_threads() == 2 and torch.get_num_threads() == 2
        for wrong in ("0", "two", "-1"):
            monkeypatch.setenv("SCRATCHMLM_THREADS", wrong)
            with pytest.raises(ScratchMLMError, match="SCRATCHMLM_THREADS"):
                use_threads()
    finally:
        torch.set_num_threads(before)


def execute(notebook, tmp_path, monkeypatch):
    _, nbformat = notebook_tools()
    pytest.importorskip("ipykernel")                    # the "python3" kernel the notebooks run in
    NotebookClient = pytest.importorskip("nbclient").NotebookClient
    monkeypatch.setenv("TQDM_DISABLE", "1")
    if FULL:
        monkeypatch.delenv("SCRATCHMLM_FAST", raising=False)
    else:
        monkeypatch.setenv("SCRATCHMLM_FAST", "1")
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb, time.perf_counter() - start


def text_of(outputs):
    parts = []
    for output in outputs:
        parts.append(output.get("text", ""))
        parts.extend(output.get("data", {}).get(kind, "") for kind in ("text/plain", "text/html"))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem[:2])
def test_notebook_runs_within_its_budget(notebook, tmp_path, monkeypatch):
    nb, seconds = execute(notebook, tmp_path, monkeypatch)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else ""
    for cell in code:
        if "figure" in cell.metadata.get("tags", []):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), \
                f"this figure cell showed no figure:\n{cell.source[:300]}"
    # a failing exercise check raises (caught above); a passing one prints ✓
    checks = text_of([o for c in code for o in c.get("outputs", [])]).count("✓ Exercise")
    assert checks >= 2, f"only {checks} exercise checks printed ✓"
    budget = BUDGETS[notebook.stem]
    mode = "full" if FULL else "fast"
    print(f"{notebook.stem}: {seconds:.1f} s in {mode} mode (budget {budget} s)")
    assert seconds <= budget, f"{notebook.stem} took {seconds:.1f} s in {mode} mode; its budget is {budget} s"
    if notebook.stem.startswith("07"):
        printed = text_of([o for c in code for o in c.get("outputs", [])])
        beaten = "bigram" if FULL else "unigram"
        assert f"beats the {beaten} baseline on [MASK] positions" in printed
