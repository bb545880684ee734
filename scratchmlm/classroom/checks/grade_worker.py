"""The student's side of ``scratchmlm grade``: one process that runs the submission's code.

    python grade_worker.py SUBMISSION EXCHANGE PART [PART ...]

The teacher's process (``grade.py``) records the calls its checks make of the adapters, on fresh
inputs, and writes them to ``EXCHANGE/calls.json`` and ``EXCHANGE/inputs.npz``. This process imports
the submission's ``scratchmlm/classroom/checks/adapters.py`` (and what it imports), answers every call of each
PART with the submission's code and writes the answers as plain data: ``EXCHANGE/out_PART.json`` and
``out_PART.npz`` (arrays only, read back without pickle). Before each part it appends the part's name
to ``EXCHANGE/progress`` (and ``ready`` once the adapters are imported), so the teacher can time
it out.

The file is the teacher's and runs from the teacher's install; it imports nothing of scratchmlm but
the submission's adapters, so the reference implementation is never loaded into the student's
process, and it leaves out the submission's ``scratchmlm/classroom/checks/__init__.py`` (which would load the
student's copy of every check). Only the standard library, numpy and torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import json
import os
import sys
import types
from pathlib import Path

MAX_DEPTH = 6            # how deep a returned value is described (nested tuples, dataclasses)


def isolate(submission: Path) -> None:
    """The submission first on ``sys.path``; this file's folder and the teacher's editable install
    (a ``__editable__`` finder that would supply the teacher's scratchmlm) removed."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != here]
    sys.path.insert(0, str(submission))
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not (getattr(finder, "__module__", "") or "").startswith("__editable__")]


def import_adapters(submission: Path):
    """The submission's ``scratchmlm.classroom.checks.adapters``, without running its ``checks/__init__.py``."""
    package = (submission / "scratchmlm").resolve()
    if not (package / "classroom" / "checks" / "adapters.py").is_file():
        raise ImportError(f"no scratchmlm/classroom/checks/adapters.py in {submission}")
    import scratchmlm
    if Path(scratchmlm.__file__).resolve().parent != package:
        raise ImportError(f"scratchmlm was imported from {scratchmlm.__file__}, not from the submission")
    checks = types.ModuleType("scratchmlm.classroom.checks")
    checks.__path__ = [str(package / "classroom" / "checks")]
    checks.__spec__ = importlib.machinery.ModuleSpec("scratchmlm.classroom.checks", None, is_package=True)
    checks.__spec__.submodule_search_locations = checks.__path__
    sys.modules["scratchmlm.classroom.checks"] = checks
    adapters = importlib.import_module("scratchmlm.classroom.checks.adapters")
    if Path(adapters.__file__).resolve().parent != package / "classroom" / "checks":
        raise ImportError(f"the adapters were imported from {adapters.__file__}, not from the submission")
    return adapters


def one_line(error: BaseException) -> str:
    """The error in one line; a stub's NotImplementedError by its message alone ("Part 2 ...")."""
    text = str(error).strip().splitlines()
    first = text[0][:300] if text else ""
    if isinstance(error, NotImplementedError) and first:
        return first
    return f"{type(error).__name__}: {first}".rstrip(": ")


class Answers:
    """Arrays written back, and the JSON that names them."""

    def __init__(self):
        self.arrays = {}

    def tensor(self, t):
        import torch
        t = t.detach().cpu()
        dtype = str(t.dtype)
        if t.dtype == torch.bfloat16:
            t = t.float()
        if t.is_complex() or t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) or t.is_quantized:
            return {"unsupported": f"tensor of {dtype}"}
        key = f"a{len(self.arrays)}"
        self.arrays[key] = t.numpy().copy()          # a copy: a parameter goes on changing after this call
        return {"tensor": key, "dtype": dtype, "requires_grad": False}

    def encode(self, value, depth: int = 0):
        import numpy as np
        import torch
        if value is None or isinstance(value, (bool, int, float, str)):
            return {"value": value}
        if isinstance(value, torch.Tensor):
            encoded = self.tensor(value)
            if "tensor" in encoded:
                encoded["requires_grad"] = bool(value.requires_grad)
            return encoded
        if isinstance(value, np.generic):
            return {"value": value.item()}
        if isinstance(value, np.ndarray) and value.dtype != object:
            return self.tensor(torch.from_numpy(np.ascontiguousarray(value)))
        if depth >= MAX_DEPTH:
            return {"unsupported": type(value).__name__}
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return {"object": type(value).__name__,
                    "fields": {name: self.encode(getattr(value, name), depth + 1) for name in value._fields},
                    "items": [self.encode(item, depth + 1) for item in value]}
        if isinstance(value, (list, tuple)):
            return {"list": [self.encode(item, depth + 1) for item in value], "tuple": isinstance(value, tuple)}
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {"dict": {key: self.encode(item, depth + 1) for key, item in value.items()}}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {field.name: getattr(value, field.name, None) for field in dataclasses.fields(value)}
        elif hasattr(value, "__dict__") and not callable(value):
            fields = {name: item for name, item in vars(value).items() if not name.startswith("_")}
        else:
            return {"unsupported": type(value).__name__}
        return {"object": type(value).__name__,
                "fields": {name: self.encode(item, depth + 1) for name, item in fields.items()}}


def decode(encoded, inputs):
    """The argument the teacher recorded, rebuilt here (tensors, generators, plain values)."""
    import torch
    if "value" in encoded:
        return encoded["value"]
    if "tensor" in encoded:
        t = torch.from_numpy(inputs[encoded["tensor"]].copy())
        return t.requires_grad_(True) if encoded.get("requires_grad") else t
    if "generator" in encoded:
        rng = torch.Generator()
        rng.set_state(torch.from_numpy(inputs[encoded["generator"]].copy()))
        return rng
    if "list" in encoded:
        items = [decode(item, inputs) for item in encoded["list"]]
        return tuple(items) if encoded["tuple"] else items
    if "dict" in encoded:
        return {key: decode(item, inputs) for key, item in encoded["dict"].items()}
    raise ValueError(f"cannot decode {sorted(encoded)}")


def tensors_in(value) -> list:
    """Every tensor in an argument, in a fixed order (the teacher walks its own arguments alike)."""
    import torch
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors_in(item)]
    return []


def answer_pure(adapters, call, inputs, answers: Answers) -> dict:
    """Call one adapter; its result, the arguments it changed in place, and, when a tensor argument
    requires grad and the result (or its first element) is a scalar in the graph, their gradients."""
    import torch
    args = [decode(arg, inputs) for arg in call["args"]]
    kwargs = {name: decode(arg, inputs) for name, arg in call["kwargs"].items()}
    tensors = tensors_in(args) + tensors_in(kwargs)
    before = [t.detach().clone() for t in tensors]
    result = getattr(adapters, call["adapter"])(*args, **kwargs)
    answer = {"result": answers.encode(result)}
    answer["changed"] = {str(i): answers.tensor(t) for i, (t, old) in enumerate(zip(tensors, before))
                         if t.shape != old.shape or not torch.equal(t.detach(), old)}
    target = result[0] if isinstance(result, (tuple, list)) and result else result
    wrt = [t for t in tensors if t.requires_grad]
    if wrt and isinstance(target, torch.Tensor) and target.requires_grad and target.numel() == 1:
        try:
            grads = torch.autograd.grad(target.sum(), wrt, allow_unused=True)
            answer["grads"] = [None if g is None else answers.tensor(g) for g in grads]
        except Exception as error:                   # noqa: BLE001 - the student's graph, reported as such
            answer["grads_error"] = one_line(error)
    return answer


def answer_scheduler(adapters, call, inputs) -> dict:
    """Build the student's scheduler over plain SGD with the recorded groups and step it: the learning
    rate of each group at each optimizer step (row k: after k scheduler.step() calls)."""
    import torch
    params = [torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in call["group_lrs"]]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, call["group_lrs"])])
    args = [decode(arg, inputs) for arg in call["args"]]
    scheduler = getattr(adapters, call["adapter"])(optimizer, *args)
    rows = []
    for step in range(call["steps"] + 1):
        rows.append([float(group["lr"]) for group in optimizer.param_groups])
        if step == call["steps"]:
            break
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        try:
            scheduler.step()
        except Exception as error:                   # noqa: BLE001
            return {"lrs": rows, "error": one_line(error), "not_implemented": isinstance(error, NotImplementedError)}
    return {"lrs": rows}


def new_stand_in(parameters: dict):
    """The stand-in model of ``checks/step.py`` (an embedding, then one linear map from the whole row
    to every position's logits), restated because this process must not import the teacher's
    package; the teacher checks that the layout it sends is this one."""
    import torch

    class Model(torch.nn.Module):
        def __init__(self, vocab_size: int, seq_len: int, d: int):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab_size, d)
            self.mix = torch.nn.Linear(seq_len * d, seq_len * vocab_size)

        def forward(self, inputs):
            batch, seq = inputs.shape
            return self.mix(self.embed(inputs).flatten(1)).view(batch, seq, -1)

    vocab_size, d = parameters["embed.weight"].shape
    model = Model(vocab_size, parameters["mix.weight"].shape[1] // d, d).to(parameters["embed.weight"].dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(parameters[name])
    return model


def new_session(setup: dict, inputs) -> dict:
    """The stand-in model, a recording optimizer of the recorded class and a counting LambdaLR over
    the recorded table: what the teacher's check hands ``run_train_step``."""
    import torch
    events: list = []
    parameters = {name: decode(p, inputs) for name, p in setup["parameters"]}
    model = new_stand_in({name: p.detach() for name, p in parameters.items()})
    if [name for name, _ in model.named_parameters()] != [name for name, _ in setup["parameters"]]:
        raise RuntimeError("the stand-in model's layout differs from the teacher's")
    model.train(setup["training"])
    base = getattr(torch.optim, setup["optimizer"])

    class Recording(base):
        def step(self, closure=None):
            events.append({"lrs": [float(group["lr"]) for group in self.param_groups],
                           "grads": [None if p.grad is None else p.grad.detach().clone()
                                     for p in model.parameters()]})
            return super().step(closure)

    class Counting(torch.optim.lr_scheduler.LambdaLR):
        counting = False

        def step(self, *args, **kwargs):
            if self.counting:
                events.append("scheduler.step")
            return super().step(*args, **kwargs)

    defaults = {name: tuple(value) if isinstance(value, list) else value for name, value in setup["defaults"].items()}
    optimizer = Recording(model.parameters(), **defaults)
    table = setup["table"]
    scheduler = Counting(optimizer, lambda done: table[min(done, len(table) - 1)])
    scheduler.counting = True
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "events": events}


def answer_train_step(adapters, call, inputs, sessions: dict, answers: Answers) -> dict:
    import torch
    if call["session"] not in sessions:
        sessions[call["session"]] = new_session(call["setup"], inputs)
    session = sessions[call["session"]]
    session["events"].clear()
    fields = {name: decode(t, inputs) for name, t in call["batch"].items()}
    batch_type = getattr(adapters, "MaskedBatch", None)

    def masker(ids, rng):
        batch = {name: t.clone() for name, t in fields.items()}
        return batch_type(**batch) if batch_type is not None else types.SimpleNamespace(**batch)

    model = session["model"]
    result = adapters.run_train_step(model, decode(call["ids"], inputs), masker, decode(call["rng"], inputs),
                                     session["optimizer"], session["scheduler"], decode(call["clip_norm"], inputs))
    events = [event if isinstance(event, str) else
              {"lrs": event["lrs"], "grads": [None if g is None else answers.tensor(g) for g in event["grads"]]}
              for event in session["events"]]
    return {"result": answers.encode(result), "events": events,
            "parameters": [answers.tensor(p) for p in model.parameters()],
            "grads": [None if p.grad is None else answers.tensor(p.grad) for p in model.parameters()]}


def answer(adapters, call, inputs, sessions, answers: Answers) -> dict:
    import torch
    torch.set_rng_state(torch.from_numpy(inputs[call["global_rng"]].copy()))
    try:
        if call["kind"] == "pure":
            return answer_pure(adapters, call, inputs, answers)
        if call["kind"] == "scheduler":
            return answer_scheduler(adapters, call, inputs)
        return answer_train_step(adapters, call, inputs, sessions, answers)
    except (Exception, SystemExit) as error:          # noqa: BLE001 - every failure of the student's code
        return {"error": one_line(error), "not_implemented": isinstance(error, NotImplementedError)}


def write(exchange: Path, part: str, record: dict, arrays: dict) -> None:
    """The part's arrays, then its JSON (whose presence says the part is complete), each by rename."""
    import numpy as np
    partial = exchange / f"writing_{part}.npz"
    with open(partial, "wb") as stream:
        np.savez(stream, **arrays)
    os.replace(partial, exchange / f"out_{part}.npz")
    partial = exchange / f"writing_{part}.json"
    partial.write_text(json.dumps(record), encoding="utf-8")
    os.replace(partial, exchange / f"out_{part}.json")


def main(argv: list[str]) -> int:
    submission, exchange, parts = Path(argv[0]).resolve(), Path(argv[1]), argv[2:]
    isolate(submission)
    import numpy as np
    import torch
    torch.set_num_threads(1)
    plan = json.loads((exchange / "calls.json").read_text(encoding="utf-8"))
    with np.load(exchange / "inputs.npz", allow_pickle=False) as stored:
        inputs = {name: stored[name] for name in stored.files}
    try:
        adapters = import_adapters(submission)
        fatal = ""
    except (Exception, SystemExit) as error:          # noqa: BLE001
        adapters, fatal = None, f"the submission's adapters could not be imported: {one_line(error)}"
    for part in ["ready", *parts]:
        with open(exchange / "progress", "a", encoding="utf-8") as progress:
            progress.write(f"{part}\n")
        if part == "ready":
            continue
        answers, sessions = Answers(), {}
        if fatal:
            record = {"fatal": fatal}
        else:
            record = {"answers": [answer(adapters, call, inputs, sessions, answers) for call in plan[part]]}
        write(exchange, part, record, answers.arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
