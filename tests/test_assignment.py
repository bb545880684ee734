"""Two-way CI for the assignments: the reference passes every graded check; a student copy
imports, its helper code works, and every blanked part fails with its own "not implemented"."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scratchmlm.assignment import BEGIN, END, TASKS, blank_solutions, make_assignment
from scratchmlm.checks import PARTS
from scratchmlm.errors import ScratchMLMError

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` importing scratchmlm from ``cwd`` (a student copy), not from the reference."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignment") / "student"
    make_assignment(set(TASKS), out)
    return out


def test_the_reference_passes_every_graded_check():
    for part, check in PARTS.items():
        report = check()
        assert report.passed, report.to_text()
        assert report.score == report.points


def test_the_student_copy_has_no_solutions_and_no_teacher_files(student_copy):
    sources = list((student_copy / "scratchmlm").rglob("*.py"))
    assert sources
    for path in sources:
        if path.name == "assignment.py":
            continue                                   # the tool itself documents the markers
        lines = path.read_text().splitlines()
        assert not [line for line in lines if BEGIN.match(line) or END.match(line)], path
    assert not (student_copy / "scratchmlm/checks/mutants.py").exists()
    assert not (student_copy / "scratchmlm/checks/make_snapshots.py").exists()
    assert not (student_copy / "tests").exists()
    assert (student_copy / "ASSIGNMENT.md").is_file()
    assert list((student_copy / "scratchmlm/checks/reference").glob("*.npz")), "the snapshots must ship"
    # signatures and docstrings stay: the stub of noam_lr still documents the formula
    noam = (student_copy / "scratchmlm/noam.py").read_text()
    assert "def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0)" in noam
    assert "min(step^-0.5, step * warmup^-1.5)" in noam
    assert 'raise NotImplementedError("Part 5 (noam): implement noam_lr' in noam


def test_the_student_copy_imports_and_its_helpers_work(student_copy):
    code = """
import torch, scratchmlm as sm
assert sm.__file__.startswith(%r), sm.__file__
tokenizer = sm.CharTokenizer.from_text("To be, or not to be")
ids = tokenizer.encode("to be", parse_special=False)
assert tokenizer.decode(ids) == "to be"
windows = sm.random_windows(torch.arange(3, 20), 4, 8, torch.Generator().manual_seed(0))
assert windows.shape == (4, 8)
model = sm.model.FeedForward(8, 16, 0.0)
assert model(torch.zeros(2, 3, 8)).shape == (2, 3, 8)
print("ok")
""" % str(student_copy)
    result = run_python(code, student_copy)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_every_blanked_part_fails_with_its_own_message(student_copy):
    code = """
import json
from scratchmlm.checks import PARTS
print(json.dumps({part: check().to_dict() for part, check in PARTS.items()}))
"""
    result = run_python(code, student_copy)
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    for part, (number, _) in TASKS.items():
        report = reports[part]
        assert not report["passed"] and report["score"] == 0
        assert report["not_implemented"].startswith(f"Part {number} ({part})"), report


def test_a_copy_with_one_part_blanked_fails_only_that_part(tmp_path):
    out = tmp_path / "attention_only"
    make_assignment({"attention"}, out)
    result = subprocess.run([sys.executable, "-m", "scratchmlm", "check", "all", "--json"], cwd=out,
                            env={**os.environ, "PYTHONPATH": str(out)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    reports = {report["part"]: report for report in json.loads(result.stdout)["parts"]}
    assert reports["attention"]["not_implemented"].startswith("Part 2 (attention)")
    # an encoder layer contains an attention: its check says which missing part blocks it
    assert reports["encoder"]["not_implemented"].startswith("Part 2 (attention)")
    assert all(reports[part]["passed"] for part in ("masking", "step", "noam")), reports


def test_the_check_command_on_the_reference(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scratchmlm", "check", "noam"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Part 5" in result.stdout and "PASS" in result.stdout


def test_assignment_make_on_the_command_line(tmp_path):
    out = tmp_path / "copy"
    result = subprocess.run([sys.executable, "-m", "scratchmlm", "assignment", "make", "--tasks", "noam,step",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "scratchmlm/noam.py" in result.stdout and "scratchmlm/step.py" in result.stdout
    assert "NotImplementedError" not in (out / "scratchmlm/masking.py").read_text()
    again = subprocess.run([sys.executable, "-m", "scratchmlm", "assignment", "make", "--tasks", "noam",
                            "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = subprocess.run([sys.executable, "-m", "scratchmlm", "assignment", "make", "--tasks", "maskin",
                            "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "masking, attention" in wrong.stderr


def test_blanking_keeps_hints_and_indentation_and_refuses_broken_markers():
    source = "def f(x):\n    \"\"\"doc\"\"\"\n    # BEGIN SOLUTION noam\n    # HINT: square it\n    y = x * x\n" \
             "    return y\n    # END SOLUTION\n"
    blanked = blank_solutions(source, {"noam"}, "f.py")
    assert blanked == ("def f(x):\n    \"\"\"doc\"\"\"\n    # HINT: square it\n    raise NotImplementedError("
                       "\"Part 5 (noam): implement f, the Noam learning-rate schedule; see its docstring\")\n")
    kept = blank_solutions(source, {"step"}, "f.py")
    assert "y = x * x" in kept and "SOLUTION" not in kept
    with pytest.raises(ScratchMLMError, match="no matching"):
        blank_solutions("    # BEGIN SOLUTION noam\n    x = 1\n", {"noam"}, "f.py")
    with pytest.raises(ScratchMLMError, match="without a BEGIN"):
        blank_solutions("x = 1\n# END SOLUTION\n", {"noam"}, "f.py")
    with pytest.raises(ScratchMLMError, match="unknown task"):
        blank_solutions("# BEGIN SOLUTION nam\nx = 1\n# END SOLUTION\n", {"noam"}, "f.py")


def execute_notebook(path: Path, tmp_path: Path, pythonpath: Path | None = None):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("PYTHONPATH")
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = str(pythonpath)      # the kernel imports the student copy
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if pythonpath is not None:
            os.environ.pop("PYTHONPATH") if env_before is None else os.environ.update(PYTHONPATH=env_before)
    return "\n".join(output.get("data", {}).get("text/html", "") + output.get("text", "")
                     for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", []))


def test_the_assignment_notebook_passes_with_the_reference_answers(tmp_path):
    shown = execute_notebook(ROOT / "tutorials/assignment_masking_and_attention.ipynb", tmp_path)
    assert "Part 1: BERT masking: PASS" in shown and "Part 2: multi-head self-attention: PASS" in shown


def test_the_student_notebook_runs_and_reports_both_parts_not_implemented(student_copy, tmp_path):
    notebook = student_copy / "tutorials/assignment_masking_and_attention.ipynb"
    assert "BEGIN SOLUTION" not in notebook.read_text()
    shown = execute_notebook(notebook, tmp_path, pythonpath=student_copy)
    assert "not implemented yet" in shown
    assert "Part 1 (masking): implement my_masker" in shown and "Part 2 (attention): implement my_attention" in shown
