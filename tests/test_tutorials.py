"""The tutorial notebooks: in sync with their jupytext sources, and executed for real."""

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def test_there_are_tutorials():
    assert NOTEBOOKS, "no tutorial notebooks found"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_matches_its_source_and_has_no_outputs(notebook):
    source = jupytext.read(notebook.with_suffix(".py"))
    paired = nbformat.read(notebook, as_version=4)
    def code(nb):
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    assert code(paired) == code(source), f"run: jupytext --sync {notebook.with_suffix('.py')}"
    assert all(not cell.get("outputs") for cell in paired.cells if cell.cell_type == "code")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_executes(notebook, tmp_path):
    nb = nbformat.read(notebook, as_version=4)
    os.environ.setdefault("TQDM_DISABLE", "1")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert any("fills correct" in o["data"]["text/html"] for o in html), "the coloured samples were not shown"
    assert any("image/png" in o.get("data", {}) for o in outputs), "the Noam curve was not shown"
