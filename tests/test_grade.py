"""The teacher's grade (``scratchmlm grade``): fresh inputs, the submission's code in its own process.

Each submission here is a student copy made by ``make_assignment``, with its adapters edited the way
a student could: the reference answers get full marks; a copy that looks answers up in the shipped
snapshots, or patches the checks in its own process, gets nothing for that part; an adapter that
raises, returns the wrong type, kills its process or hangs loses that part only.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchmlm.classroom.assignment import TASKS, make_assignment
from scratchmlm.classroom.checks import check_attention, grade as grading
from scratchmlm.classroom.checks.grade import Grade, decode, fresh_inputs, grade, with_gradient
from scratchmlm.classroom.checks.report import Item, Report
from scratchmlm.classroom.checks.snapshots import load_snapshot
from scratchmlm.harness.cli import main

ALL_POINTS = 100


def student_copy(tmp_path: Path, tasks: set[str], extra_adapters: str = "") -> Path:
    """A student copy with ``tasks`` blanked and ``extra_adapters`` appended to its adapters (later
    definitions win, as when a student edits the file). A copy holds the assignment notebook, written
    with the dev-only jupytext (pip install -e ".[dev]"); without it these tests skip."""
    pytest.importorskip("jupytext")
    out = tmp_path / ("copy_" + "_".join(sorted(tasks)) if tasks else tmp_path / "copy_reference")
    make_assignment(tasks, out)
    if extra_adapters:
        adapters = out / "scratchmlm/classroom/checks/adapters.py"
        adapters.write_text(adapters.read_text() + "\n\n" + extra_adapters, encoding="utf-8")
    return out


def parts_of(result: Grade) -> dict[str, Report]:
    return {report.part: report for report in result.reports}


def reasons(report: Report) -> str:
    failing = [f"{item.detail} {item.cause}" for item in report.items if not item.passed]
    return " | ".join(failing) + report.not_implemented


# -- the spoofs, written as a student would ------------------------------------------------------

LOOKUP = '''
def run_attention(weights, x, num_heads, key_padding_mask=None):
    """A spoof: no attention at all. It looks the answer up in the reference outputs that ship with
    the copy, then among the grader's files (any folder it was handed on the command line)."""
    import sys
    from pathlib import Path
    import numpy as np
    with np.load(Path(__file__).parent / "reference" / "attention.npz", allow_pickle=False) as snapshot:
        for case in ("plain", "padding"):
            if np.array_equal(snapshot[f"{case}/x"], x.numpy()):
                return torch.from_numpy(snapshot[f"expected/{case}/output"].copy())
    for folder in [Path(arg) for arg in sys.argv[1:] if Path(arg).is_dir()]:
        for path in folder.glob("*.npz"):
            with np.load(path, allow_pickle=False) as stored:
                for name in stored.files:
                    a = stored[name]
                    if a.shape == tuple(x.shape) and a.dtype == np.float64 and not np.array_equal(a, x.numpy()):
                        return torch.from_numpy(a.copy())
    return torch.zeros_like(x)
'''

PATCHER = '''
import sys as _sys
from scratchmlm.classroom.checks import report as _report

# What fools the student's own check: every report passes with full points.
_report.Report.passed = property(lambda self: True)
_report.Report.score = property(lambda self: self.points)
# What tries to fool the grader: the worker running this file answers every call with nothing, and
# whatever grading module is loaded here is told to pass.
_main = _sys.modules.get("__main__")
if hasattr(_main, "answer"):
    _main.answer = lambda *args, **kwargs: {"result": {"value": None}}
for _name, _module in list(_sys.modules.items()):
    if _name.startswith("scratchmlm.classroom.checks") and hasattr(_module, "Report"):
        _module.Report.passed = property(lambda self: True)


def run_encoder_layer(weights, x, num_heads, d_ff, norm_first, dropout=0.0, key_padding_mask=None):
    return torch.zeros_like(x)


def run_encoder(layer_weights, final_norm, x, num_heads, d_ff, norm_first, key_padding_mask=None):
    return torch.zeros_like(x)
'''

BROKEN = '''
def run_masker(ids, rng, mask_id, replacement_ids, never_select_ids, *probabilities):
    raise ValueError("my masker is broken")


def run_attention(weights, x, num_heads, key_padding_mask=None):
    return x.tolist()                        # the right numbers would not help: a list is not a tensor


def run_train_step(model, ids, masker, rng, optimizer, scheduler, clip_norm):
    import os
    os._exit(3)                              # the whole process goes


def run_noam(step, d_model, warmup, factor=1.0):
    import time
    time.sleep(3600)
'''

KNOWN_BUGS = '''
import math as _math


def run_masker(ids, rng, mask_id, replacement_ids, never_select_ids, select_prob=0.15, mask_token_prob=0.8,
               random_token_prob=0.1):
    batch = BertMasker(mask_id, replacement_ids, never_select_ids, select_prob, mask_token_prob,
                       random_token_prob)(ids, rng)
    ids.copy_(batch.inputs)                   # the caller's ids changed in place
    return batch


def run_attention(weights, x, num_heads, key_padding_mask=None):
    # W_q scaled by sqrt(d_k): the same scores as forgetting to divide by sqrt(d_k)
    scale = _math.sqrt(x.shape[-1] // num_heads)
    weights = {**weights, "w_q": weights["w_q"] * scale, "b_q": weights["b_q"] * scale}
    attention = MultiHeadAttention(x.shape[-1], num_heads, dropout=0.0).to(x.dtype).eval()
    load_attention(attention, weights)
    with torch.no_grad():
        return attention(x, key_padding_mask)


def run_train_step(model, ids, masker, rng, optimizer, scheduler, clip_norm):
    result = train_step(model, ids, masker, rng, optimizer, scheduler, clip_norm)
    scheduler.step()                          # the schedule stepped twice per step
    return result


def make_noam_scheduler(optimizer, d_model, warmup, factor=1.0):
    scheduler = NoamScheduler(optimizer, d_model, warmup, factor)
    scheduler.step()                          # one step ahead from the start
    return scheduler
'''


# -- fast: the pieces ----------------------------------------------------------------------------

@pytest.mark.attention
def test_the_lookup_spoof_fools_the_students_snapshot_items_only():
    """Why the grade exists: the shipped snapshot answers the student's frozen-input items; only the
    property items on inputs drawn inside the check catch the lookup, and those inputs are still
    the student's to read. The grade draws every input afresh in the teacher's process."""
    snapshot = {name: t for name, t in load_snapshot("attention").items()}

    def lookup(weights, x, num_heads, key_padding_mask=None):
        for case in ("plain", "padding"):
            if torch.equal(snapshot[f"{case}/x"], x):
                return snapshot[f"expected/{case}/output"].clone()

    report = check_attention(run_attention=lookup)
    frozen = [item for item in report.items if item.name.startswith("output [")]
    assert len(frozen) == 2 and all(item.passed for item in frozen)
    assert not report.passed and 0 < report.score < 25


def test_fresh_inputs_differ_from_the_shipped_ones_and_between_seeds():
    shipped = load_snapshot("attention")
    seen = []
    for seed in (1, 2):
        with fresh_inputs("attention", seed)():
            fresh = grading.attention_check.load_snapshot("attention")
        assert fresh.keys() == shipped.keys()
        assert not torch.equal(fresh["plain/x"], shipped["plain/x"])
        assert not torch.equal(fresh["expected/plain/output"], shipped["expected/plain/output"])
        seen.append(fresh["plain/x"])
    assert not torch.equal(*seen)
    with fresh_inputs("attention", 1)():                 # the same seed: the same inputs (a grade reproduces)
        assert torch.equal(grading.attention_check.load_snapshot("attention")["plain/x"], seen[0])
    assert grading.attention_check.load_snapshot("attention")["plain/x"].equal(shipped["plain/x"])
    # the Noam tables too: a frozen table could be looked up by its (step, d_model, warmup, factor)
    with fresh_inputs("noam", 1)():
        tables = grading.noam_check.load_snapshot("noam")
    assert int(tables["table1/warmup"]) != int(load_snapshot("noam")["table1/warmup"])


def test_the_gradient_link_keeps_the_value_and_carries_the_students_gradient():
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    value = torch.tensor(1.2345678901234567, dtype=torch.float64)
    gradient = torch.randn(2, 3, 5, dtype=torch.float64)
    gradient[0, 1] = 0.0
    loss = with_gradient(value, [logits], [gradient])
    assert loss.item() == value.item()                   # exactly: x*g - x*g is 0 to the last bit
    grad, = torch.autograd.grad(loss, logits)
    assert torch.equal(grad, gradient) and bool((grad[0, 1] == 0).all())


def test_answers_are_read_as_plain_data_only(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        np.load(tmp_path / "objects.npy", allow_pickle=False)
    arrays = {"a0": np.arange(6.0).reshape(2, 3)}
    rebuilt = decode({"object": "StepResult", "fields": {"loss": {"tensor": "a0", "dtype": "torch.float64"},
                                                         "lr": {"value": 0.5}}}, arrays)
    assert rebuilt.lr == 0.5 and torch.equal(rebuilt.loss, torch.arange(6.0, dtype=torch.float64).view(2, 3))
    assert type(decode({"unsupported": "generator"}, arrays)).__name__ == "generator"


def test_the_gradescope_results_follow_its_format():
    reports = [Report("attention", "Part 2: multi-head self-attention", 25, items=[Item("output", True)]),
               Report("noam", "Part 5: Noam schedule", 10, items=[Item("table", False, "3 of 40 values differ")])]
    results = Grade("/submission", 1234, reports).to_gradescope()
    assert results["score"] == 25 and results["max_score"] == 35 and results["visibility"] == "visible"
    assert "1234" in results["output"]
    assert [test["name"] for test in results["tests"]] == ["Part 2: multi-head self-attention", "Part 5: Noam schedule"]
    for test, report in zip(results["tests"], reports):
        assert set(test) == {"name", "score", "max_score", "output", "visibility"}
        assert test["score"] == report.score and test["max_score"] == report.points
        assert report.title in test["output"]
    assert "3 of 40 values differ" in results["tests"][1]["output"]
    json.dumps(results)


def test_a_folder_without_adapters_fails_every_part_with_its_reason(tmp_path):
    result = grade(tmp_path, seed=3, parts=["attention", "noam"])
    assert result.score == 0 and [report.part for report in result.reports] == ["attention", "noam"]
    for report in result.reports:
        assert "no scratchmlm/classroom/checks/adapters.py" in reasons(report)


def test_the_grader_does_not_ship_in_a_student_copy(tmp_path):
    out = student_copy(tmp_path, {"noam"})
    assert not (out / "scratchmlm/classroom/checks/grade.py").exists()
    assert not (out / "scratchmlm/classroom/checks/grade_worker.py").exists()


# -- slow: whole grades, each with one student process (restarted after a part that kills it) ----

@pytest.mark.slow
def test_the_reference_answers_get_full_marks_on_fresh_inputs(tmp_path, capsys):
    out = student_copy(tmp_path, set())
    results = tmp_path / "results" / "results.json"
    status = main(["grade", str(out), "--format", "gradescope", "--out", str(results)])
    assert status == 0, capsys.readouterr()
    gradescope = json.loads(results.read_text())
    assert gradescope["score"] == gradescope["max_score"] == ALL_POINTS
    assert [test["score"] for test in gradescope["tests"]] == [20, 25, 20, 25, 10]
    seed = int(gradescope["output"].split("seed ")[1].split(")")[0])
    assert f"seed {seed}" in capsys.readouterr().out


@pytest.mark.slow
def test_a_blank_copy_gets_nothing_and_says_which_part_is_missing(tmp_path):
    result = grade(student_copy(tmp_path, set(TASKS)), seed=7)
    assert result.score == 0 and len(result.reports) == len(TASKS)
    for report in result.reports:
        number = TASKS[report.part][0]
        assert report.not_implemented.startswith(f"Part {number} ({report.part})") or \
            report.part == "encoder" and report.not_implemented.startswith("Part 2"), report.to_text()


@pytest.mark.attention
@pytest.mark.slow
def test_looking_up_the_shipped_answers_gets_no_credit(tmp_path):
    out = student_copy(tmp_path, {"attention"}, LOOKUP)
    result = grade(out, parts=["attention", "noam"])
    parts = parts_of(result)
    assert parts["attention"].score == 0 and not parts["attention"].not_implemented
    graded = [item for item in parts["attention"].items if item.weight > 0]
    assert graded and not any(item.passed for item in graded), parts["attention"].to_text()
    assert parts["noam"].score == 10                     # the rest of the copy is graded as usual


@pytest.mark.encoder
@pytest.mark.slow
def test_patching_the_checks_from_the_adapters_fools_check_but_not_grade(tmp_path):
    out = student_copy(tmp_path, {"encoder"}, PATCHER)
    env = {**os.environ, "PYTHONPATH": str(out), "TQDM_DISABLE": "1"}
    own = subprocess.run([sys.executable, "-m", "scratchmlm", "check", "encoder"], cwd=out, env=env,
                         capture_output=True, text=True, timeout=300)
    assert own.returncode == 0 and "PASS (20/20 points)" in own.stdout, own.stdout + own.stderr
    result = grade(out, seed=11, parts=["encoder"])
    assert result.score == 0 and not result.passed, result.to_text()


@pytest.mark.slow
def test_known_bugs_are_named_on_fresh_inputs_through_the_students_process(tmp_path):
    """In-place changes, a loss's gradient, a training step's optimizer and scheduler calls and a
    scheduler's rates all come back from the student's process: each known bug is still named."""
    from scratchmlm.classroom.checks import attention, masking, noam, step

    result = grade(student_copy(tmp_path, set(), KNOWN_BUGS), seed=13, parts=["masking", "attention", "step", "noam"])
    parts = parts_of(result)
    for part, cause in (("masking", masking.CAUSES["input_modified_in_place"]),
                        ("attention", attention.CAUSES["no_scaling"]),
                        ("step", step.CAUSES["scheduler_stepped_twice"]),
                        ("noam", noam.CAUSES["scheduler_one_step_ahead"])):
        failing = [item for item in parts[part].items if not item.passed]
        assert not parts[part].passed and parts[part].score < parts[part].points and failing, parts[part].to_text()
        assert cause in [item.cause for item in failing], parts[part].to_text()
    # what the step got right still passes: its loss and gradient came through the process boundary
    assert all(item.passed for item in parts["step"].items if item.name.startswith("masked_cross_entropy")), \
        parts["step"].to_text()


@pytest.mark.slow
def test_a_crash_a_hang_and_a_wrong_type_lose_only_their_parts(tmp_path, capsys):
    out = student_copy(tmp_path, set(), BROKEN)
    status = main(["grade", str(out), "--json", "--timeout", "5"])
    assert status == 1
    result = json.loads(capsys.readouterr().out)
    assert [part["part"] for part in result["parts"]] == list(TASKS) and result["seed"] >= 0
    parts = {part["part"]: part for part in result["parts"]}
    assert result["score"] == parts["encoder"]["score"] == 20, result

    def failed(part):
        return " ".join(item["detail"] for item in parts[part]["items"] if not item["passed"])

    assert "ValueError: my masker is broken" in failed("masking")
    assert "expected a tensor, got list" in failed("attention")
    assert "exit status 3" in failed("step")
    assert "within 5 s" in failed("noam")
    for part in ("masking", "attention", "step", "noam"):
        assert parts[part]["score"] == 0
        for item in parts[part]["items"]:          # a one-line reason (and, from a check, the student's line)
            assert item["passed"] or 1 <= len(item["detail"].splitlines()) <= 2, item
