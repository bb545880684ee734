"""Two-way CI for the assignments: the reference passes every graded check; a student copy
imports, its helper code works, and every blanked part fails with its own "not implemented".
A student copy holds no solution line, every stub carries hints, its README names only what it
holds, and its tutorials run up to their first exercise and hold no exercise answer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import re

import pytest

from scratchmlm.classroom.assignment import BEGIN, END, HINT, TASKS, blank_solutions, make_assignment
from scratchmlm.classroom.checks import PARTS
from scratchmlm.errors import ScratchMLMError
from scratchmlm.harness.cli import main

ROOT = Path(__file__).resolve().parents[1]


def needs_notebook_tools(execute: bool = False):
    """Skip unless the dev-only notebook packages are installed (pip install -e ".[dev]"): a copy
    holds the assignment notebook, which jupytext writes; running one needs nbclient and ipykernel."""
    pytest.importorskip("jupytext")
    if execute:
        pytest.importorskip("nbclient")
        pytest.importorskip("ipykernel")


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` importing scratchmlm from ``cwd`` (a student copy), not from the reference."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    needs_notebook_tools()
    out = tmp_path_factory.mktemp("assignment") / "student"
    make_assignment(set(TASKS), out, tutorials=True)
    return out


def solution_lines(source: str) -> set[str]:
    """The telling lines inside the solution regions of ``source``: not hints, not trivial, and
    not also found outside a region (where the copy keeps them anyway)."""
    inside, outside, in_region = [], set(), False
    for line in source.splitlines():
        if BEGIN.match(line) or END.match(line):
            in_region = bool(BEGIN.match(line))
        elif in_region and not HINT.match(line):
            inside.append(line.strip())
        else:
            outside.add(line.strip())
    return {line for line in inside if len(line) >= 12 and line not in outside and not line.startswith("#")}


@pytest.mark.slow
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
    assert not (student_copy / "scratchmlm/classroom/checks/mutants.py").exists()
    assert not (student_copy / "scratchmlm/classroom/checks/make_snapshots.py").exists()
    assert not (student_copy / "tests").exists()
    assert (student_copy / "ASSIGNMENT.md").is_file()
    assert list((student_copy / "scratchmlm/classroom/checks/reference").glob("*.npz")), "the snapshots must ship"
    # signatures and docstrings stay: the stub of noam_lr still documents the formula
    noam = (student_copy / "scratchmlm/noam.py").read_text()
    assert "def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0)" in noam
    assert "min(step^-0.5, step * warmup^-1.5)" in noam
    assert 'raise NotImplementedError("Part 5 (noam): implement noam_lr' in noam
    # and no line of a solution survives in the copy of its file
    regions = 0
    for reference in (ROOT / "scratchmlm").rglob("*.py"):
        if reference.name != "assignment.py" and any(map(BEGIN.match, reference.read_text().splitlines())):
            lines = solution_lines(reference.read_text())
            regions += 1
            assert lines, reference
            copied = student_copy / reference.relative_to(ROOT)
            leaked = lines & {line.strip() for line in copied.read_text().splitlines()}
            assert not leaked, f"{reference.name}: {sorted(leaked)[:3]}"
    assert regions >= 5


def test_every_stub_in_the_copy_comes_with_hints(student_copy):
    stubs = 0
    for path in (student_copy / "scratchmlm").rglob("*.py"):
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if 'raise NotImplementedError("Part' in line and path.name != "assignment.py":
                stubs += 1
                assert HINT.match(lines[index - 1]), f"{path.name}:{index + 1}: a stub without a # HINT line"
    # noam_lr, get_lr, masked_cross_entropy, train_step, BertMasker.__call__, _replace_selected,
    # MultiHeadAttention.forward, EncoderLayer.forward, Encoder.forward
    assert stubs == 9


STUDENT_SESSION = """
import json
import torch, scratchmlm as sm
from scratchmlm.classroom.checks import PARTS
from scratchmlm.masking import WholeWordMasker

seen = {"imported_from": sm.__file__}
# the helpers a student uses while writing the parts
tokenizer = sm.CharTokenizer.from_text("To be, or not to be")
ids = tokenizer.encode("to be", parse_special=False)
windows = sm.random_windows(torch.arange(3, 20), 4, 8, torch.Generator().manual_seed(0))
seen["helpers"] = [tokenizer.decode(ids), list(windows.shape),
                   list(sm.model.FeedForward(8, 16, 0.0)(torch.zeros(2, 3, 8)).shape)]
# every part's graded check
seen["reports"] = {part: check().to_dict() for part, check in PARTS.items()}
# both maskers stop at the part that is not written yet
tokenizer = sm.CharTokenizer.from_text("to be or not to be")
ids = tokenizer.encode("to be or not to be", parse_special=False)[None]
seen["maskers"] = {}
for masker in (sm.BertMasker.for_tokenizer(tokenizer), WholeWordMasker.for_tokenizer(tokenizer)):
    try:
        masker(ids, torch.Generator().manual_seed(0))
    except NotImplementedError as error:
        seen["maskers"][type(masker).__name__] = str(error)
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def student_session(student_copy) -> dict:
    """What one Python process importing the student copy (not the reference) saw: a student's session."""
    result = run_python(STUDENT_SESSION, student_copy)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_whole_word_masking_needs_the_graded_masking_part(student_session):
    """_replace_selected (80/10/10) is shared by BertMasker and the whole-word masker, so it is
    graded through BertMasker: a copy cannot pass Part 1 and leave it unwritten."""
    maskers = student_session["maskers"]
    assert maskers["BertMasker"].startswith("Part 1 (masking)")
    assert maskers["WholeWordMasker"].startswith("Part 1 (masking): implement _replace_selected")


def paths_named(markdown: str) -> set[str]:
    """Link targets and inline-code paths of ``markdown``, fenced blocks left out."""
    markdown = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    links = set(re.findall(r"\]\(([^)#\s]+)\)", markdown))
    code = {token for token in re.findall(r"`([^`\s]+)`", markdown)
            if "/" in token and not token.startswith(("~", "$", "http"))}
    return links | code


@pytest.mark.parametrize("tutorials", [False, True])
def test_the_copy_documents_only_what_it_holds(student_copy, tmp_path, tutorials):
    copy = student_copy if tutorials else tmp_path / "plain"
    if not tutorials:
        make_assignment({"noam"}, copy)
    for document in ("README.md", "ASSIGNMENT.md"):
        text = (copy / document).read_text()
        named = paths_named(text)
        assert named, document
        missing = sorted(path for path in named if not (copy / path).exists())
        assert not missing, f"{document} names {missing}, which the copy does not hold"
        assert "tests/" not in text and "experiments/" not in text, document
    readme = (copy / "README.md").read_text()
    assert "`scratchmlm/noam.py` | The Noam learning-rate schedule" in readme
    assert ("tutorials/01_characters_and_windows.ipynb" in readme) == tutorials
    assert (copy / "tutorials/01_characters_and_windows.ipynb").exists() == tutorials


def numbered_tutorials():
    return sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def test_student_tutorials_are_valid_notebooks_without_answers(student_copy):
    import jupytext
    import nbformat

    assert len(numbered_tutorials()) >= 8
    for reference in numbered_tutorials():
        source = student_copy / "tutorials" / reference.name
        notebook = source.with_suffix(".ipynb")
        text = source.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, source.name
        answers = solution_lines(reference.read_text())
        assert answers, reference.name
        leaked = answers & {line.strip() for line in text.splitlines()}
        assert not leaked, f"{source.name} keeps answer lines {sorted(leaked)[:3]}"
        nb = nbformat.read(notebook, as_version=4)
        nbformat.validate(nb)
        assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
        assert [c.source for c in nb.cells] == [c.source for c in jupytext.read(source).cells], notebook.name
        exercises = [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
        assert len(exercises) >= 2, notebook.name
        for cell in exercises:
            assert 'raise NotImplementedError("Exercise: write your answer here")' in cell, notebook.name
        cell_lines = {line.strip() for cell in nb.cells for line in cell.source.splitlines()}
        assert not answers & cell_lines, notebook.name


@pytest.mark.slow
@pytest.mark.parametrize("number", ["01", "03"])
def test_a_student_tutorial_runs_up_to_its_first_exercise(tmp_path, number):
    """On a copy with the schedule blanked (01 and 03 do not use it; tutorials that use a part the
    copy blanks stop at that part's message), everything runs until the first exercise cell asks
    for an answer."""
    needs_notebook_tools(execute=True)
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    student_copy = tmp_path / "copy"
    make_assignment({"noam"}, student_copy, tutorials=True)
    notebook = next((student_copy / "tutorials").glob(f"{number}_*.ipynb"))
    nb = nbformat.read(notebook, as_version=4)
    env_before = dict(os.environ)
    os.environ.update(PYTHONPATH=str(student_copy), SCRATCHMLM_FAST="1", TQDM_DISABLE="1")
    try:
        with pytest.raises(CellExecutionError, match="Exercise: write your answer here"):
            NotebookClient(nb, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    first_exercise = next(i for i, cell in enumerate(code) if "exercise" in cell.metadata.get("tags", []))
    failed = [i for i, cell in enumerate(code) for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert failed == [first_exercise]
    assert all(cell.get("execution_count") for cell in code[:first_exercise]), "a cell before the exercise did not run"


def test_a_wrong_exercise_answer_is_told_without_the_expected_value():
    from scratchmlm.classroom.notebook import ExerciseError, check

    check("Exercise 1", 0.4316, 0.4321, tolerance=0.001)
    with pytest.raises(ExerciseError) as wrong:
        check("Exercise 1", 0.5, 0.4321, tolerance=0.001, hint="weight each kind by its count")
    message = str(wrong.value)
    assert "0.5" in message and "weight each kind" in message and "0.432" not in message
    import torch
    expected = torch.tensor([[3, 1], [4, 1]])
    with pytest.raises(ExerciseError) as wrong:
        check("Exercise 2", torch.tensor([[3, 1], [4, 2]]), expected)
    assert "[4, 1]" not in str(wrong.value) and "[4, 2]" in str(wrong.value)
    with pytest.raises(ExerciseError, match=r"shape \[2, 2\]") as wrong:
        check("Exercise 2", torch.tensor([3, 1, 4, 1]), expected)
    assert "[[3, 1]" not in str(wrong.value)


@pytest.mark.slow
def test_the_student_copy_imports_and_its_helpers_work(student_copy, student_session):
    assert student_session["imported_from"].startswith(str(student_copy)), student_session["imported_from"]
    assert student_session["helpers"] == ["to be", [4, 8], [2, 3, 8]]


@pytest.mark.slow
def test_every_blanked_part_fails_with_its_own_message(student_session):
    reports = student_session["reports"]
    for part, (number, _) in TASKS.items():
        report = reports[part]
        assert not report["passed"] and report["score"] == 0
        assert report["not_implemented"].startswith(f"Part {number} ({part})"), report


@pytest.mark.slow
def test_a_copy_with_one_part_blanked_fails_only_that_part(tmp_path):
    needs_notebook_tools()
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


def test_the_check_command_on_the_reference(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                          # any directory: the checks ship with the package
    assert main(["check", "noam"]) == 0
    out = capsys.readouterr().out
    assert "Part 5" in out and "PASS" in out


def test_assignment_make_on_the_command_line(tmp_path, capsys):
    needs_notebook_tools()
    out = tmp_path / "copy"

    def make(*options: str) -> tuple[int, str, str]:
        status = main(["assignment", "make", *options])
        printed = capsys.readouterr()
        return status, printed.out, printed.err

    status, printed, errors = make("--tasks", "noam,step", "--out", str(out))
    assert status == 0, errors
    assert "scratchmlm/noam.py" in printed and "scratchmlm/step.py" in printed
    assert "NotImplementedError" not in (out / "scratchmlm/masking.py").read_text()
    assert not (out / "tutorials/01_characters_and_windows.py").exists()
    status, printed, errors = make("--tasks", "noam", "--tutorials", "--out", str(tmp_path / "tutorials"))
    assert status == 0, errors
    assert "tutorials/06_schedules.ipynb" in printed
    status, _, errors = make("--tasks", "noam", "--out", str(out))
    assert status == 2 and "already exists" in errors
    status, _, errors = make("--tasks", "maskin", "--out", str(tmp_path / "x"))
    assert status == 2 and "masking, attention" in errors


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
    needs_notebook_tools(execute=True)
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


@pytest.mark.slow
def test_the_assignment_notebook_passes_with_the_reference_answers(tmp_path):
    shown = execute_notebook(ROOT / "tutorials/assignment_masking_and_attention.ipynb", tmp_path)
    assert "Part 1: BERT masking: PASS" in shown and "Part 2: multi-head self-attention: PASS" in shown


@pytest.mark.slow
def test_the_student_notebook_runs_and_reports_both_parts_not_implemented(student_copy, tmp_path):
    notebook = student_copy / "tutorials/assignment_masking_and_attention.ipynb"
    assert "BEGIN SOLUTION" not in notebook.read_text()
    shown = execute_notebook(notebook, tmp_path, pythonpath=student_copy)
    assert "not implemented yet" in shown
    assert "Part 1 (masking): implement my_masker" in shown and "Part 2 (attention): implement my_attention" in shown
