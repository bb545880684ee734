"""Frozen reference outputs: ``.npz`` files of float64 arrays, read without pickle.

Each part's file holds the inputs of its cases, the reference outputs (``expected/...``) and the
outputs of known bugs on the same inputs (``bug/<name>/...``), all computed in float64 with
dropout off by ``python -m scratchmlm.classroom.checks.make_snapshots`` from the reference implementation.
Graded checks compare against these, so a student's code is judged on what it computes, whatever
its internal layout, and the buggy implementations themselves need not ship with an assignment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SNAPSHOT_DIR = Path(__file__).resolve().parent / "reference"


def snapshot_path(part: str) -> Path:
    return SNAPSHOT_DIR / f"{part}.npz"


def load_snapshot(part: str) -> dict[str, torch.Tensor]:
    path = snapshot_path(part)
    if not path.is_file():
        raise FileNotFoundError(f"The reference snapshot {path} is missing; the teacher makes it with "
                                f"python -m scratchmlm.classroom.checks.make_snapshots")
    with np.load(path, allow_pickle=False) as arrays:
        return {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}


def save_snapshot(part: str, tensors: dict[str, torch.Tensor]) -> Path:
    path = snapshot_path(part)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{name: t.detach().cpu().numpy() for name, t in sorted(tensors.items())})
    return path


def bugs_of(snapshot: dict[str, torch.Tensor], key: str, causes: dict[str, str]) -> dict[str, tuple[str, torch.Tensor]]:
    """The known bugs' outputs for ``key`` (e.g. ``"padding/output"``) with their causes in words;
    bugs that give the reference answer on this case are left out (they are not visible here)."""
    expected = snapshot[f"expected/{key}"]
    found = {}
    for name, words in causes.items():
        output = snapshot.get(f"bug/{name}/{key}")
        if output is None:
            continue
        if output.shape == expected.shape and torch.allclose(output, expected, rtol=0, atol=1e-12):
            continue
        found[name] = (words, output)
    return found
