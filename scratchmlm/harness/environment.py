"""What ``scratchmlm env`` reports: the facts a bug report needs, gathered without side effects;
and what ``TQDM_DISABLE`` means.

Versions of scratchmlm, Python and the libraries; the data directory, whether Tiny Shakespeare
is there and its sha256 against the expected one (nothing is downloaded); torch's CPU threads; and
the device ``--device auto`` would pick, with the GPU's name.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from .. import __version__
from ..corpus import TINY_SHAKESPEARE_FILE, TINY_SHAKESPEARE_SHA256, data_dir, sha256_of_file
from .build import resolve_device


def progress_bar_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` turns the progress bars off, read as tqdm itself reads it: set to
    anything but the empty string (``TQDM_DISABLE=0`` too: tqdm converts the text with ``bool``).
    The Trainer passes ``disable=`` to tqdm for ``--quiet``, which overrides the variable, so it
    asks here."""
    return bool(os.environ.get("TQDM_DISABLE"))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_report() -> dict:
    """The report as a JSON-ready dict."""
    directory = data_dir()
    corpus = directory / TINY_SHAKESPEARE_FILE
    present = corpus.is_file()
    sha256 = sha256_of_file(corpus) if present else None
    device = resolve_device("auto")
    return {
        "versions": {"scratchmlm": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "numpy": _version("numpy"), "tokenizers": _version("tokenizers"),
                     "matplotlib": _version("matplotlib"), "tqdm": _version("tqdm")},
        "platform": platform.platform(),
        "data_dir": str(directory),
        "data_dir_from": "$SCRATCHMLM_DATA_DIR" if os.environ.get("SCRATCHMLM_DATA_DIR") else "the default",
        "corpus": {"path": str(corpus), "present": present, "sha256": sha256,
                   "expected_sha256": TINY_SHAKESPEARE_SHA256,
                   "matches": None if sha256 is None else sha256 == TINY_SHAKESPEARE_SHA256},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "auto_device": str(device),
        "cuda_device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def format_environment(report: dict) -> str:
    """The report as aligned ``name: value`` lines."""
    corpus = report["corpus"]
    if not corpus["present"]:
        corpus_line = f"missing ({corpus['path']}; it is downloaded on first use)"
    elif corpus["matches"]:
        corpus_line = f"present, sha256 {corpus['sha256']} (the expected one)"
    else:
        corpus_line = (f"present, sha256 {corpus['sha256']} -- NOT the expected {corpus['expected_sha256']}: "
                       f"delete {corpus['path']} and it is downloaded again")
    device = report["auto_device"] + (f" ({report['cuda_device_name']})" if report["cuda_device_name"] else "")
    lines = [(name, version or "not installed") for name, version in report["versions"].items()]
    lines += [("platform", report["platform"]),
              ("data directory", f"{report['data_dir']} ({report['data_dir_from']})"),
              ("tinyshakespeare", corpus_line),
              ("torch threads", f"{report['torch_threads']} (of {report['cpu_count']} CPUs)"),
              ("device 'auto'", device)]
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:>{width}}: {value}" for name, value in lines)
