"""Shared fixtures. The real corpus comes from $SCRATCHMLM_DATA_DIR (CI: ../shared/data)."""

import os
from pathlib import Path

import pytest
import torch

from scratchmlm import CharTokenizer, load_text

REPO = Path(__file__).resolve().parents[1]

# The README's test command sets SCRATCHMLM_DATA_DIR; default to the shared data directory beside
# the checkout (where it exists) so a plain `pytest` in a development checkout works too.
if "SCRATCHMLM_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
    os.environ["SCRATCHMLM_DATA_DIR"] = str(REPO.parent / "shared" / "data")

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """The real Tiny Shakespeare (verified by sha256; downloaded if missing and online)."""
    return load_text("tinyshakespeare")


@pytest.fixture(scope="session")
def tokenizer(corpus_text) -> CharTokenizer:
    return CharTokenizer.from_text(corpus_text)


@pytest.fixture(scope="session")
def corpus_ids(corpus_text, tokenizer) -> torch.Tensor:
    return tokenizer.encode(corpus_text, parse_special=False)


@pytest.fixture
def small_text() -> str:
    return "the quick brown fox jumps over the lazy dog.\nTHE QUICK BROWN FOX!\n" * 20
