"""Student copies of scratchmlm: the reference with chosen parts blanked out, from one source.

The reference code marks each task's body:

    def noam_lr(step, d_model, warmup, factor=1.0):
        \"\"\"docstring with the math\"\"\"
        ...argument checks (kept)...
        # BEGIN SOLUTION noam
        # HINT: lines like this one stay in the student copy
        ...the body...
        # END SOLUTION

``make_assignment(tasks, out)`` copies the project to ``out``. There, the body of every region
whose task was chosen becomes ``raise NotImplementedError("Part 5 (noam): implement noam_lr ...")``
(hints kept, at the body's indentation); the markers of the other tasks are dropped and their
bodies kept. Signatures, docstrings and the code around the regions are untouched. Exercise
regions in the assignment notebooks (``# BEGIN SOLUTION`` with no task) are always blanked.

The copy leaves out what would give answers away or only serves the teacher: the buggy variants
(``checks/mutants.py``), the snapshot maker, the teacher's grader (``checks/grade.py`` and its
worker), the tests, the experiments and the tutorials other than ``tutorials/assignment_*``. The
graded checks (``scratchmlm check PART``) and their frozen reference outputs go with it. With
``tutorials=True`` the numbered tutorials go too, each exercise answer blanked (``.py`` and
``.ipynb``, without outputs). The copy gets its own ``README.md``, written here from what the copy
holds, so that it never points at a file the student lacks.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

from ..errors import ScratchMLMError

# task -> (part number, what the student implements)
TASKS = {
    "masking": (1, "BERT masking"),
    "attention": (2, "multi-head self-attention"),
    "encoder": (3, "the encoder layer and encoder"),
    "step": (4, "the masked loss and the training step"),
    "noam": (5, "the Noam learning-rate schedule"),
}
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "constraints.txt", "LICENSE")   # README.md: written anew
TEACHER_ONLY = tuple(f"classroom/checks/{name}.py" for name in ("mutants", "make_snapshots", "unseen_bugs", "grade",
                                                                "grade_worker"))
BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?: (?P<task>\w+))?\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
HINT = re.compile(r"^\s*# HINT\b")
DEFINITION = re.compile(r"^(?P<indent>\s*)(?:async\s+)?(?P<kind>def|class)\s+(?P<name>\w+)")


def _enclosing_name(lines: list[str], index: int) -> str:
    """``Class.method`` or ``function`` enclosing line ``index``."""
    names, depth = [], len(lines[index]) - len(lines[index].lstrip())
    for line in reversed(lines[:index]):
        match = DEFINITION.match(line)
        if match and len(match["indent"]) < depth:
            names.append(match["name"])
            depth = len(match["indent"])
    return ".".join(reversed(names)) or "this cell"


def blank_solutions(source: str, tasks: set[str], where: str) -> str:
    """``source`` with the chosen tasks' solution regions (and every task-less one) replaced by
    ``raise NotImplementedError``; other regions keep their body and lose their markers."""
    lines = source.split("\n")
    output: list[str] = []
    index = 0
    while index < len(lines):
        begin = BEGIN.match(lines[index])
        if not begin:
            if END.match(lines[index]):
                raise ScratchMLMError(f"{where}:{index + 1}: '# END SOLUTION' without a BEGIN.")
            output.append(lines[index])
            index += 1
            continue
        task, indent = begin["task"], begin["indent"]
        if task is not None and task not in TASKS:
            raise ScratchMLMError(f"{where}:{index + 1}: unknown task {task!r}; tasks: {', '.join(TASKS)}.")
        end = next((j for j in range(index + 1, len(lines)) if END.match(lines[j]) or BEGIN.match(lines[j])), None)
        if end is None or BEGIN.match(lines[end]):
            raise ScratchMLMError(f"{where}:{index + 1}: '# BEGIN SOLUTION' has no matching '# END SOLUTION'.")
        body = lines[index + 1:end]
        if task is None or task in tasks:
            output += [line for line in body if HINT.match(line)]
            if task is None:
                message = "Exercise: write your answer here"
            else:
                number, what = TASKS[task]
                message = f"Part {number} ({task}): implement {_enclosing_name(lines, index)}, {what}; see its docstring"
            output.append(f'{indent}raise NotImplementedError("{message}")')
        else:
            output += body
        index = end + 1
    return "\n".join(output)


def project_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "setup.cfg").is_file():
        raise ScratchMLMError(f"{root} is not a scratchmlm source checkout; 'assignment make' needs one "
                              f"(git clone the project and pip install -e it).")
    return root


def parse_tasks(text: str) -> set[str]:
    tasks = {task.strip() for task in text.split(",") if task.strip()}
    unknown = sorted(tasks - set(TASKS))
    if not tasks or unknown:
        raise ScratchMLMError(f"--tasks takes a comma-separated list of {', '.join(TASKS)}; got {text!r}.")
    return tasks


def make_assignment(tasks: set[str], out: str | Path, root: Path | None = None,
                    tutorials: bool = False) -> list[Path]:
    """Write the student copy to ``out`` (which must not exist yet); returns the files blanked.

    ``tutorials``: also write the numbered tutorials with their exercise answers blanked."""
    root = root or project_root()
    out = Path(out)
    if out.exists():
        raise ScratchMLMError(f"{out} already exists; choose a new directory for the student copy.")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    out.mkdir(parents=True)
    shutil.copytree(root / "scratchmlm", out / "scratchmlm", ignore=ignore)
    for teacher_only in TEACHER_ONLY:
        (out / "scratchmlm" / teacher_only).unlink(missing_ok=True)
    for name in PROJECT_FILES:
        if (root / name).is_file():
            shutil.copyfile(root / name, out / name)
    blanked = []
    for path in sorted((out / "scratchmlm").rglob("*.py")):
        if path.name == "assignment.py":                # this file: its docstring shows the markers
            continue
        source = path.read_text(encoding="utf-8")
        if "# BEGIN SOLUTION" in source:
            new = blank_solutions(source, tasks, str(path.relative_to(out)))
            compile(new, str(path), "exec")            # the copy must still import
            path.write_text(new, encoding="utf-8")
            if 'raise NotImplementedError("Part' in new:
                blanked.append(path)
    notebooks = _copy_notebooks(root, out, "assignment_*.py", set(TASKS))
    if tutorials:
        notebooks += _copy_notebooks(root, out, "[0-9][0-9]_*.py", tasks)
    (out / "ASSIGNMENT.md").write_text(_student_assignment(tasks), encoding="utf-8")
    (out / "README.md").write_text(_student_readme(out, blanked, notebooks), encoding="utf-8")
    return blanked + notebooks


def _copy_notebooks(root: Path, out: Path, pattern: str, tasks: set[str]) -> list[Path]:
    """The tutorials matching ``pattern`` with their solution regions blanked, as ``.py`` and ``.ipynb``."""
    sources = sorted((root / "tutorials").glob(pattern))
    if not sources:
        return []
    try:
        import jupytext
    except ImportError:
        raise ScratchMLMError("Copying the notebooks needs jupytext: pip install -e \".[notebooks]\".") from None
    (out / "tutorials").mkdir(exist_ok=True)
    written = []
    for source in sources:
        text = blank_solutions(source.read_text(encoding="utf-8"), tasks, str(source.relative_to(root)))
        target = out / "tutorials" / source.name
        target.write_text(text, encoding="utf-8")
        jupytext.write(jupytext.reads(text, fmt="py:percent"), target.with_suffix(".ipynb"))
        written += [target, target.with_suffix(".ipynb")]
    return written


def _student_assignment(tasks: set[str]) -> str:
    rows = "\n".join(f"| {TASKS[t][0]} | `{t}` | {TASKS[t][1]} | `scratchmlm check {t}` |"
                     for t in sorted(tasks, key=lambda t: TASKS[t][0]))
    return f"""# scratchmlm assignment

Install once: `python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[notebooks]"`.

Implement the parts below. Each stub raises `NotImplementedError("Part N ...")`; its docstring
states the math, and the `# HINT` comments above the `raise` point the way. Check your work as often as you like:

| part | task | what | check |
|---|---|---|---|
{rows}

`scratchmlm check all` runs every part. A failing check tells you where your output first differs
from the reference, by how much, and, when your output matches a known mistake, which one. Each
part's points are split over its checks, so a part half right earns about half its points; an
exception in your code fails only the check it happened in, and names your line.

Masking rule: select each maskable position independently with probability `select_prob`, or, as
Google's BERT does, exactly `round(select_prob * n)` of a row's `n` maskable positions at random;
both are accepted unless your teacher says otherwise. Clearing the gradients at the start of a
training step instead of the end is accepted too.

Your code is reached only through `scratchmlm/classroom/checks/adapters.py`. If you lay out weights
differently from the reference (say, separate W_q, W_k, W_v instead of one fused layer), change
the loading lines there; the checks judge what your code computes.
"""


def _first_docstring_line(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0].replace("|", "\\|") if docstring.strip() else ""


def _student_readme(out: Path, blanked: list[Path], notebooks: list[Path]) -> str:
    """A README for the copy that names only what it holds: each module with its docstring's first
    line (the files with parts to write marked), and the notebooks that shipped."""
    rows = []
    for path in sorted((out / "scratchmlm").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") and path.parent.name != "scratchmlm":
            continue
        mark = " **(you write parts of this)**" if path in blanked else ""
        rows.append(f"| `{path.relative_to(out).as_posix()}` | {_first_docstring_line(path)}{mark} |")
    shown = [path for path in notebooks if path.suffix == ".ipynb"]
    tutorials = ""
    if shown:
        names = "\n".join(f"- [`{path.relative_to(out).as_posix()}`]({path.relative_to(out).as_posix()})"
                          for path in shown)
        tutorials = f"""
## Notebooks

`jupyter lab tutorials/` opens them. Each exercise cell raises `NotImplementedError` until you
write its answer; the check after it prints `✓` when your answer is right and never shows the
expected value. The notebooks run on *your* copy of scratchmlm, so a notebook that uses a part you
have not written yet stops there with that part's "not implemented" message.

{names}
"""
    return f"""# scratchmlm (student copy)

A from-scratch, pure-PyTorch BERT-style masked language model, trained character by character on
Tiny Shakespeare, with some of its parts left for you to write: [ASSIGNMENT.md](ASSIGNMENT.md)
says which, and how to check them (`scratchmlm check all`).

```bash
python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[notebooks]"
scratchmlm check all                  # grade your parts
scratchmlm train --steps 800 --warmup 200 --noam-factor 0.5   # a short run, once every part passes
```

**The corpus.** Tiny Shakespeare is downloaded on first use into `$SCRATCHMLM_DATA_DIR` (default
`~/.cache/scratchmlm`); offline, put `tinyshakespeare.txt` there yourself. Any UTF-8 text works
too: `scratchmlm train --data my_text.txt`.
{tutorials}
## What is where

| file | what it holds |
|---|---|
""" + "\n".join(rows) + "\n"
