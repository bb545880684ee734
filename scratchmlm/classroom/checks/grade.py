"""The teacher's grade: the graded checks run here, the student's code in its own process.

    scratchmlm grade SUBMISSION [--seed S] [--format text|json|gradescope] [--timeout SECONDS]

``scratchmlm check`` is the student's feedback: it runs in the student's process on inputs whose
expected outputs ship with the assignment, so a submission can look them up or patch the checks.
A grade is made here instead, from the teacher's install:

1. **Fresh inputs.** A seed (default: 63 bits from ``os.urandom``, printed with the grade) draws each
   part's inputs afresh: new snapshots from ``make_snapshots`` (the reference's outputs *and* each
   known bug's, so a wrong answer is still diagnosed) and new seeds for the masking check.
2. **Record.** Each part's check runs in this process against the teacher's reference adapters,
   with a recorder in front of each: every call is noted as plain data (tensors, generator states,
   numbers; torch's global RNG state at the call). The inputs alone go to a temporary folder;
   no expected output ever leaves this process.
3. **Answer.** ``grade_worker.py`` runs under its own Python process, with the submission first on
   ``sys.path``: it imports the submission's ``scratchmlm/classroom/checks/adapters.py`` (and what that
   imports), nothing else of the submission and nothing of the teacher's scratchmlm, makes every
   recorded call and writes the results back as JSON and ``.npz`` (read here with
   ``allow_pickle=False``). Each part has a wall-clock limit; a part that hangs or kills the process
   fails with a one-line reason and the process is restarted for the parts after it.
4. **Replay.** The same check runs here again on the same inputs, its adapters now returning the
   submission's answers, with their side effects replayed: tensors changed in place, the gradient of
   a returned loss, the rates a scheduler set, and a training step's optimizer and scheduler calls
   and resulting parameters. Every judgement, and every expected value, is the teacher's code's.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import types
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from ...errors import ScratchMLMError
from . import PARTS
from . import adapters as reference
from . import attention as attention_check
from . import encoder as encoder_check
from . import make_snapshots
from . import masking as masking_check
from . import noam as noam_check
from . import step as step_check
from .properties import NO_MODULE
from .report import Item, Report
from .step import one_thread

CHECK_MODULES = {"masking": masking_check, "attention": attention_check, "encoder": encoder_check,
                 "step": step_check, "noam": noam_check}
# The adapters each part's check calls (the keyword arguments of its check function).
ADAPTERS = {"masking": ("run_masker",), "attention": ("run_attention",),
            "encoder": ("run_encoder_layer", "run_encoder"),
            "step": ("run_masked_cross_entropy", "run_train_step"),
            "noam": ("run_noam", "make_noam_scheduler")}
SNAPSHOT_MAKERS = {"attention": make_snapshots.attention_snapshot, "encoder": make_snapshots.encoder_snapshot,
                   "step": make_snapshots.step_snapshot, "noam": make_snapshots.noam_snapshot}
# a module cannot cross the process boundary: the gradient items are graded by the student-side check
NO_MODULES = {"attention": {"make_attention": NO_MODULE}, "encoder": {"make_encoder_layer": NO_MODULE}}
MASKING_SEEDS = ("DATA_SEED", "MASK_SEED", "OTHER_SEED", "GLOBAL_SEED")

WORKER = Path(__file__).resolve().with_name("grade_worker.py")
DEFAULT_TIMEOUT = 60.0                  # seconds the submission's code may take per part
STARTUP_TIMEOUT = 120.0                 # seconds to start Python and import torch and the adapters
MAX_ANSWER_BYTES = 1 << 30              # what the student's process may write back per part
SCHEDULE_TABLE_LENGTH = 512             # learning-rate multipliers sent for the stand-in schedule
STAND_IN_LAYOUT = ["embed.weight", "mix.weight", "mix.bias"]   # grade_worker.new_stand_in builds this


class GraderError(ScratchMLMError):
    """The grader itself cannot grade (not the submission's fault)."""


class StudentError(RuntimeError):
    """Raised during the replay where the submission's code raised in its own process."""


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(8), "big") >> 1


def derived_seed(seed: int, *names: str) -> int:
    """A seed for one use, derived from the grade's seed (63 bits, so torch takes it)."""
    digest = hashlib.sha256("/".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor in an argument, in the order ``grade_worker.tensors_in`` walks it."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors_in(item)]
    return []


# -- fresh inputs --------------------------------------------------------------------------------

def fresh_inputs(part: str, seed: int):
    """A context manager (reusable) under which ``part``'s check runs on inputs drawn from ``seed``:
    a fresh snapshot in place of the frozen one, or, for masking, fresh seeds for its ids and masks."""
    module = CHECK_MODULES[part]
    if part == "masking":
        patches = {name: derived_seed(seed, part, name) for name in MASKING_SEEDS}
    else:
        snapshot = SNAPSHOT_MAKERS[part](seed=derived_seed(seed, part))
        patches = {"load_snapshot": lambda name: {key: t.clone() for key, t in snapshot.items()}}

    @contextlib.contextmanager
    def inputs():
        with contextlib.ExitStack() as stack:
            for name, value in patches.items():
                stack.enter_context(mock.patch.object(module, name, value))
            yield
    return inputs


# -- record: the calls the checks make, as plain data ---------------------------------------------

class Exchange:
    """Every part's recorded calls and the arrays they carry, as written for the worker."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.calls: dict[str, list[dict]] = {}
        self._states: dict[bytes, str] = {}

    def array(self, a: np.ndarray) -> str:
        key = f"i{len(self.arrays)}"
        self.arrays[key] = np.ascontiguousarray(a)
        return key

    def global_rng(self) -> str:
        """torch's global RNG state now (stored once per distinct state)."""
        state = torch.get_rng_state().numpy()
        digest = hashlib.sha1(state.tobytes()).digest()
        if digest not in self._states:
            self._states[digest] = self.array(state.copy())
        return self._states[digest]

    def encode(self, value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return {"value": value}
        if isinstance(value, torch.Tensor):
            return {"tensor": self.array(value.detach().cpu().numpy().copy()), "requires_grad": value.requires_grad}
        if isinstance(value, torch.Generator):
            return {"generator": self.array(value.get_state().numpy().copy())}
        if isinstance(value, (list, tuple)):
            return {"list": [self.encode(item) for item in value], "tuple": isinstance(value, tuple)}
        if isinstance(value, dict):
            return {"dict": {str(key): self.encode(item) for key, item in value.items()}}
        raise GraderError(f"the grader cannot send a {type(value).__name__} to the student's process")

    def write(self, folder: Path) -> None:
        (folder / "calls.json").write_text(json.dumps(self.calls), encoding="utf-8")
        np.savez(folder / "inputs.npz", **self.arrays)


class CountingScheduler:
    """The reference scheduler, counting the check's ``step()`` calls so the worker makes as many."""

    def __init__(self, inner, call: dict):
        self._inner, self._call = inner, call

    def step(self, *args, **kwargs):
        self._call["steps"] += 1
        return self._inner.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class Recorder:
    """The reference adapters, each noting its calls in the exchange before answering."""

    def __init__(self, exchange: Exchange, part: str):
        self.exchange, self.calls = exchange, exchange.calls.setdefault(part, [])
        self.sessions: dict[int, tuple[int, torch.nn.Module]] = {}

    def adapter(self, name: str):
        if name == "make_noam_scheduler":
            return self.scheduler
        if name == "run_train_step":
            return self.train_step
        function = getattr(reference, name)

        def record(*args, **kwargs):
            self.calls.append({"kind": "pure", "adapter": name, "global_rng": self.exchange.global_rng(),
                               "args": [self.exchange.encode(arg) for arg in args],
                               "kwargs": {key: self.exchange.encode(arg) for key, arg in kwargs.items()}})
            return function(*args, **kwargs)
        return record

    def scheduler(self, optimizer, *args):
        call = {"kind": "scheduler", "adapter": "make_noam_scheduler", "global_rng": self.exchange.global_rng(),
                "group_lrs": [float(group["lr"]) for group in optimizer.param_groups],
                "args": [self.exchange.encode(arg) for arg in args], "steps": 0}
        self.calls.append(call)
        return CountingScheduler(reference.make_noam_scheduler(optimizer, *args), call)

    def train_step(self, model, ids, masker, rng, optimizer, scheduler, clip_norm):
        call = {"kind": "train_step", "adapter": "run_train_step", "global_rng": self.exchange.global_rng()}
        if id(model) not in self.sessions:
            self.sessions[id(model)] = (len(self.sessions), model)      # the model kept: its id stays unique
            call["setup"] = self.session_setup(model, optimizer, scheduler)
        copy = torch.Generator()
        copy.set_state(rng.get_state())
        batch = masker(ids.clone(), copy)
        call.update(session=self.sessions[id(model)][0], ids=self.exchange.encode(ids),
                    rng=self.exchange.encode(rng), clip_norm=self.exchange.encode(clip_norm),
                    batch={name: self.exchange.encode(getattr(batch, name)) for name in ("inputs", "labels", "kinds")})
        self.calls.append(call)
        return reference.run_train_step(model, ids, masker, rng, optimizer, scheduler, clip_norm)

    def session_setup(self, model, optimizer, scheduler) -> dict:
        """What the worker needs to rebuild the check's stand-ins: the model's weights, the
        optimizer's class and settings, the schedule's multipliers."""
        layout = [name for name, _ in model.named_parameters()]
        if type(model).__name__ != "StandInModel" or layout != STAND_IN_LAYOUT:
            raise GraderError(f"the step check's stand-in model changed ({type(model).__name__}: {layout}); "
                              f"grade_worker.new_stand_in must build the same model")
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) or scheduler.last_epoch != 0 \
                or len(optimizer.param_groups) != 1:
            raise GraderError("the step check must hand run_train_step a fresh LambdaLR over one parameter group")
        base = next(cls for cls in type(optimizer).__mro__
                    if cls.__module__.startswith("torch.optim") and cls is not torch.optim.Optimizer)
        plain = (bool, int, float, str, type(None))
        defaults = {key: value for key, value in optimizer.defaults.items()
                    if isinstance(value, plain)
                    or (isinstance(value, tuple) and all(isinstance(v, plain) for v in value))}
        table = [float(scheduler.lr_lambdas[0](done)) for done in range(SCHEDULE_TABLE_LENGTH)]
        return {"parameters": [[name, self.exchange.encode(p)] for name, p in model.named_parameters()],
                "training": model.training, "optimizer": base.__name__, "defaults": defaults, "table": table}


# -- replay: the submission's answers, as the checks expect them -----------------------------------

class Returned(types.SimpleNamespace):
    """An object the submission returned, rebuilt from its fields."""


def decode(encoded, arrays: dict[str, np.ndarray]):
    """A value the worker sent back, rebuilt from plain data."""
    if "value" in encoded:
        return encoded["value"]
    if "tensor" in encoded:
        array = arrays[encoded["tensor"]]
        if array.dtype == object:
            raise StudentError("an object array came back")
        t = torch.from_numpy(array.copy())
        if encoded.get("dtype") == "torch.bfloat16":
            t = t.to(torch.bfloat16)
        if encoded.get("requires_grad") and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)
        return t
    if "list" in encoded:
        items = [decode(item, arrays) for item in encoded["list"]]
        return tuple(items) if encoded.get("tuple") else items
    if "dict" in encoded:
        return {key: decode(item, arrays) for key, item in encoded["dict"].items()}
    if "object" in encoded:
        name = re.sub(r"\W", "_", str(encoded["object"])) or "Returned"
        fields = {key: decode(item, arrays) for key, item in encoded["fields"].items()}
        if "items" in encoded and all(key.isidentifier() and not key.startswith("_") for key in fields):
            return collections.namedtuple(name, list(fields))(*(decode(item, arrays) for item in encoded["items"]))
        return type(name, (Returned,), {})(**fields)
    if "unsupported" in encoded:
        return type(re.sub(r"\W", "_", str(encoded["unsupported"])) or "Unsupported", (), {})()
    raise StudentError(f"an answer the grader cannot read: {sorted(encoded)[:3]}")


def with_gradient(target: torch.Tensor, wrt: list[torch.Tensor], grads: list) -> torch.Tensor:
    """``target``'s value, in the graph of ``wrt`` with the gradients the student's graph gave:
    ``target + sum((x * g).sum() - (x.detach() * g).sum())`` adds exactly 0 and has gradient ``g``."""
    value = target.detach().clone()
    if not any(g is not None for g in grads):
        return value.requires_grad_(True)        # in a graph, but not the arguments' (as the student's was)
    link = sum((x * g).sum() - (x.detach() * g).sum() for x, g in zip(wrt, grads) if g is not None)
    return value + link.to(value.dtype)


class ReplayedScheduler:
    """Sets the optimizer's rates to those the submission's scheduler set, step by step."""

    def __init__(self, optimizer, answer: dict):
        self.optimizer, self.rows, self.error = optimizer, answer["lrs"], answer.get("error")
        self.done = 0
        self._apply()

    def _apply(self):
        for group, lr in zip(self.optimizer.param_groups, self.rows[self.done]):
            group["lr"] = lr

    def step(self):
        self.done += 1
        if self.done < len(self.rows):
            return self._apply()
        raise StudentError(self.error or "the scheduler was stepped more often than the student's process was asked")

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]


class Replayer:
    """Adapters that return the submission's recorded answers, in the order the check asks."""

    def __init__(self, calls: list[dict], answers: list[dict], arrays: dict[str, np.ndarray]):
        if len(answers) != len(calls):
            raise StudentError(f"the student's process answered {len(answers)} of {len(calls)} calls")
        self.queues: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        for call, answer in zip(calls, answers):
            self.queues[call["adapter"]].append(answer)
        self.arrays = arrays

    def next(self, name: str, raise_error: bool = True) -> dict:
        if not self.queues[name]:
            raise StudentError(f"{name} was called more often than the student's process was asked")
        answer = self.queues[name].popleft()
        if raise_error and "error" in answer:
            raise (NotImplementedError if answer.get("not_implemented") else StudentError)(answer["error"])
        return answer

    def adapter(self, name: str):
        if name == "make_noam_scheduler":
            return self.scheduler
        if name == "run_train_step":
            return self.train_step

        def replay(*args, **kwargs):
            answer = self.next(name)
            tensors = tensors_in(args) + tensors_in(kwargs)
            for index, encoded in answer.get("changed", {}).items():        # in-place changes, made here too
                changed = decode(encoded, self.arrays)
                with torch.no_grad():
                    if changed.shape == tensors[int(index)].shape:
                        tensors[int(index)].copy_(changed)
                    else:
                        tensors[int(index)].data = changed.to(tensors[int(index)].dtype)
            result = decode(answer["result"], self.arrays)
            if "grads" in answer or "grads_error" in answer:
                wrt = [t for t in tensors if t.requires_grad]
                grads = [None if g is None else decode(g, self.arrays) for g in answer.get("grads", [])]
                grads += [None] * (len(wrt) - len(grads))
                if isinstance(result, tuple) and hasattr(result, "_fields"):
                    result = result._replace(**{result._fields[0]: with_gradient(result[0], wrt, grads)})
                elif isinstance(result, (tuple, list)):
                    result = type(result)([with_gradient(result[0], wrt, grads), *result[1:]])
                else:
                    result = with_gradient(result, wrt, grads)
            return result
        return replay

    def scheduler(self, optimizer, *args):
        answer = self.next("make_noam_scheduler", raise_error=False)
        if "lrs" not in answer:
            error = NotImplementedError if answer.get("not_implemented") else StudentError
            raise error(answer.get("error", "no answer"))
        return ReplayedScheduler(optimizer, answer)

    def train_step(self, model, ids, masker, rng, optimizer, scheduler, clip_norm):
        """The submission's step, replayed on the check's own objects: its optimizer.step() calls
        (with the gradients and rates it saw) and scheduler.step() calls in order, then its
        parameters and leftover gradients."""
        answer = self.next("run_train_step")
        params = list(model.parameters())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            for event in answer["events"]:
                if event == "scheduler.step":
                    scheduler.step()
                    continue
                for p, g in zip(params, event["grads"]):
                    p.grad = None if g is None else decode(g, self.arrays).to(p.dtype)
                for group, lr in zip(optimizer.param_groups, event["lrs"]):
                    group["lr"] = lr
                optimizer.step()
        with torch.no_grad():
            for p, value in zip(params, answer["parameters"]):
                p.copy_(decode(value, self.arrays))
        for p, g in zip(params, answer["grads"]):
            p.grad = None if g is None else decode(g, self.arrays).to(p.dtype)
        return decode(answer["result"], self.arrays)


# -- the student's process -----------------------------------------------------------------------

def run_worker(python: str, submission: Path, exchange: Path, parts: list[str], timeout: float) -> dict[str, str]:
    """Run the worker over ``parts``, restarting it after a part that hangs or kills it; returns
    the one-line reason of each part that got no answer.

    The worker writes ``ready`` to ``EXCHANGE/progress`` once the submission's adapters are
    imported (allowed ``STARTUP_TIMEOUT``), then each part's name as it starts it (each part allowed
    ``timeout`` seconds). Only a later part restarts the clock, so a process that writes the
    file itself cannot run for longer than its parts' time together."""
    failures: dict[str, str] = {}
    remaining = list(parts)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(TQDM_DISABLE="1", OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    while remaining:
        progress, log = exchange / "progress", exchange / "stderr.txt"
        progress.write_text("", encoding="utf-8")
        with open(log, "wb") as stderr:
            process = subprocess.Popen([python, str(WORKER), str(submission), str(exchange), *remaining],
                                       cwd=submission, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=stderr, start_new_session=True)
            stage, since, limit, timed_out = -1, time.monotonic(), max(STARTUP_TIMEOUT, timeout), False
            while process.poll() is None:
                lines = progress.read_text(encoding="utf-8", errors="replace").split()
                if stage == -1 and "ready" in lines:
                    stage, since, limit = 0, time.monotonic(), timeout
                if stage >= 0 and lines and lines[-1] in remaining[stage + 1:]:
                    stage, since = remaining.index(lines[-1]), time.monotonic()
                if time.monotonic() - since > limit:
                    timed_out = True
                    break
                if all((exchange / f"out_{part}.json").is_file() for part in remaining):
                    break                                  # all answered (a thread of its own may linger)
                time.sleep(0.02)
            with contextlib.suppress(ProcessLookupError):          # no child of the student's code outlives it
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        answered = [part for part in remaining if (exchange / f"out_{part}.json").is_file()]
        stuck = [part for part in remaining if part not in answered]
        if stage >= 0:
            stuck = [remaining[stage]] if remaining[stage] in stuck else []
        tail = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        for part in stuck:
            if timed_out:
                failures[part] = (f"your code did not finish this part within {limit:g} s (stopped)" if stage >= 0
                                  else f"importing your adapters took more than {limit:g} s (stopped)")
            else:
                failures[part] = (f"the process running your code ended (exit status {process.returncode}) "
                                  f"{'during this part' if stage >= 0 else 'while importing your adapters'}"
                                  + (f": {tail[-1].strip()[:300]}" if tail else ""))
        remaining = [part for part in remaining if part not in answered and part not in failures]
    return failures


def read_answers(exchange: Path, part: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A part's answers: JSON and arrays only (no pickle), within a size limit."""
    paths = [exchange / f"out_{part}.json", exchange / f"out_{part}.npz"]
    if sum(path.stat().st_size for path in paths) > MAX_ANSWER_BYTES:
        raise StudentError(f"the answers of this part exceed {MAX_ANSWER_BYTES >> 20} MiB")
    with zipfile.ZipFile(paths[1]) as archive:                 # what the arrays take once unpacked
        if sum(info.file_size for info in archive.infolist()) > MAX_ANSWER_BYTES:
            raise StudentError(f"the answers of this part exceed {MAX_ANSWER_BYTES >> 20} MiB")
    record = json.loads(paths[0].read_text(encoding="utf-8"))
    with np.load(paths[1], allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return record, arrays


# -- the grade -----------------------------------------------------------------------------------

def failed_report(part: str, reason: str) -> Report:
    module = CHECK_MODULES[part]
    return Report(module.PART, module.TITLE, module.POINTS,
                  items=[Item("your code ran and answered every call of this part", False, reason)])


@dataclass
class Grade:
    submission: str
    seed: int
    reports: list[Report]

    @property
    def score(self) -> float:
        return sum(report.score for report in self.reports)

    @property
    def max_score(self) -> float:
        return sum(report.points for report in self.reports)

    @property
    def passed(self) -> bool:
        return all(report.passed for report in self.reports)

    @property
    def how_to_reproduce(self) -> str:
        return f"scratchmlm grade {self.submission} --seed {self.seed}"

    def to_dict(self) -> dict:
        return {"submission": self.submission, "seed": self.seed, "reproduce": self.how_to_reproduce,
                "score": self.score, "max_score": self.max_score, "passed": self.passed,
                "parts": [report.to_dict() for report in self.reports]}

    def to_text(self) -> str:
        head = f"Graded {self.submission} on fresh inputs, seed {self.seed} (reproduce: {self.how_to_reproduce})"
        return "\n\n".join([head, *(report.to_text() for report in self.reports),
                            f"total: {self.score:g}/{self.max_score:g} points"])

    def to_gradescope(self) -> dict:
        """Gradescope's ``results.json``: one test per part."""
        return {"score": self.score, "max_score": self.max_score, "visibility": "visible",
                "stdout_visibility": "hidden",
                "output": f"Graded on fresh inputs (seed {self.seed}) by the teacher's reference implementation.",
                "tests": [{"name": report.title, "score": report.score, "max_score": report.points,
                           "output": report.to_text(), "visibility": "visible"} for report in self.reports]}


def grade(submission: str | Path, seed: int | None = None, parts: list[str] | None = None,
          timeout: float = DEFAULT_TIMEOUT, python: str | None = None) -> Grade:
    """Grade the student copy in ``submission`` (the folder holding its ``scratchmlm/``) on fresh
    inputs from ``seed`` (default: a new random one); see the module's docstring."""
    submission = locate_copy(Path(submission).resolve())
    seed = fresh_seed() if seed is None else int(seed)
    parts = list(PARTS) if parts is None else list(parts)
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise ScratchMLMError(f"unknown part(s) {', '.join(unknown) or '(none)'}; the parts are {', '.join(PARTS)}")
    if not timeout > 0:
        raise ScratchMLMError(f"--timeout must be a positive number of seconds; got {timeout}")
    if not submission.is_dir():
        raise ScratchMLMError(f"{submission} is not a folder; give the student copy's folder (the one holding "
                              f"scratchmlm/)")
    exchange, inputs = Exchange(), {part: fresh_inputs(part, seed) for part in parts}
    for part in parts:                                   # 1-2: fresh inputs, the calls, the reference's verdict
        recorder = Recorder(exchange, part)
        with inputs[part](), one_thread():
            report = PARTS[part](**{name: recorder.adapter(name) for name in ADAPTERS[part]}, **NO_MODULES.get(part, {}),
                                 seed=derived_seed(seed, part, "properties"))
        if not report.passed:
            raise GraderError(f"the reference implementation fails the {part} check on seed {seed}; the grader "
                              f"is broken, not the submission:\n{report.to_text()}")
    problem = ("" if (submission / "scratchmlm" / "classroom" / "checks" / "adapters.py").is_file()
               else f"no scratchmlm/classroom/checks/adapters.py in {submission}")
    reports = []
    with tempfile.TemporaryDirectory(prefix="scratchmlm-grade-") as folder:
        folder = Path(folder)
        exchange.write(folder)
        failures = {} if problem else run_worker(python or sys.executable, submission, folder, parts, timeout)
        for part in parts:                               # 4: the same checks, on the submission's answers
            reason = problem or failures.get(part)
            if reason:
                reports.append(failed_report(part, reason))
                continue
            reports.append(replay(part, exchange.calls[part], folder, inputs[part], derived_seed(seed, part, "properties")))
    return Grade(str(submission), seed, reports)


def locate_copy(submission: Path) -> Path:
    """The folder holding the copy's ``scratchmlm/``: the submission itself, or its one subfolder
    that holds it (an upload of the whole ``hw1/`` folder)."""
    if (submission / "scratchmlm").is_dir():
        return submission
    found = [path.parents[3] for path in submission.glob("*/scratchmlm/classroom/checks/adapters.py")]
    return found[0] if len(found) == 1 else submission


def replay(part: str, calls: list[dict], folder: Path, inputs, property_seed: int) -> Report:
    try:
        record, arrays = read_answers(folder, part)
        if "fatal" in record:
            return failed_report(part, str(record["fatal"]))
        replayer = Replayer(calls, record["answers"], arrays)
        with inputs(), one_thread(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PARTS[part](**{name: replayer.adapter(name) for name in ADAPTERS[part]}, **NO_MODULES.get(part, {}),
                              seed=property_seed)
    except StudentError as error:
        return failed_report(part, f"your code raised {error}")
    except Exception as error:                           # noqa: BLE001 - a grade is never lost to a crash
        return failed_report(part, f"your code's answers stopped the check: {one_line(error)}")
