import pytest
import torch

from scratchmlm import ScratchMLMError
from scratchmlm.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_of_plain_state(tmp_path):
    state = {"step": 3, "model": {"w": torch.arange(4.0)}, "vocab": ["[PAD]", "a"], "rng": torch.get_rng_state()}
    path = save_checkpoint(state, tmp_path / "ck" / "last.pt")
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert list(tmp_path.glob("ck/*.tmp")) == []


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint({"step": 1, "w": torch.randn(1000)}, tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ScratchMLMError, match="cannot be read"):
        load_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ScratchMLMError, match="not a scratchmlm checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ScratchMLMError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class Evil:
    """Any class: unpickling it would import and run code, so weights_only loading refuses it."""


def test_pickled_code_is_refused(tmp_path):
    torch.save({"format_version": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ScratchMLMError, match="cannot be read"):
        load_checkpoint(tmp_path / "evil.pt")


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert list(tmp_path.glob("*.tmp")) == []
