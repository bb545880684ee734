import errno
import os
import pickle
import random
import re

import pytest
import torch

from scratchmlm import ScratchMLMError
from scratchmlm.harness import checkpoint
from scratchmlm.harness.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint, state_sha256


def assert_identical(a, b):
    """Equal values of exactly the same types, tensors equal in dtype, shape and every element."""
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_identical(x, y)
    else:
        assert a == b


def sample_state(size: int = 4) -> dict:
    weights = torch.randn(size, generator=torch.Generator().manual_seed(0))
    return {"step": 3, "best_loss": 2.5, "done": False, "note": None, "vocab": ["[PAD]", "a"],
            "model": {"w": weights, "b": torch.arange(3)}, "betas": (0.9, 0.98),
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}}, "rng": torch.get_rng_state()}


def assert_one_clean_line(message: str):
    """One line, no escape codes, none of torch's unsafe advice, a reason of at most 200 characters."""
    assert "\n" not in message and "\x1b" not in message
    assert "weights_only" not in message and "safe_globals" not in message and "trust" not in message
    reason = message.split("scratchmlm checkpoint: ")[1].rsplit("). Use", 1)[0]
    assert 0 < len(reason) <= 200


def test_round_trip_of_plain_state(tmp_path):
    state = sample_state()
    path = save_checkpoint(state, tmp_path / "ck" / "last.pt")
    loaded = load_checkpoint(path)
    assert_identical(loaded, {"format_version": FORMAT_VERSION, **state})
    assert list(tmp_path.glob("ck/*.tmp")) == []
    # saving what was loaded (format_version included) round-trips too
    assert_identical(load_checkpoint(save_checkpoint(loaded, path)), loaded)


def test_plain_torch_load_sees_the_callers_keys_and_the_digest(tmp_path):
    path = save_checkpoint({"step": 5, "format_version": 99, "sha256": "mine"}, tmp_path / "last.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 5 and raw["format_version"] == FORMAT_VERSION == 2
    assert raw["sha256"] == state_sha256({"format_version": 2, "step": 5}) and len(raw["sha256"]) == 64


def test_digest_covers_types_and_shapes():
    digests = {state_sha256({"x": value}) for value in
               (1, 1.0, True, "1", None, [1], (1,), {1: 1}, {"1": 1},
                torch.tensor([1]), torch.tensor([1.0]), torch.zeros(4), torch.zeros(2, 2), torch.zeros(4).double())}
    assert len(digests) == 14
    assert state_sha256({"a": 1, "b": 2}) != state_sha256({"b": 2, "a": 1})
    assert state_sha256({"x": ["ab", "c"]}) != state_sha256({"x": ["a", "bc"]})


def test_unsupported_value_is_refused_before_writing(tmp_path):
    with pytest.raises(ScratchMLMError, match=r"Cannot checkpoint state\['rng'\]\['py'\]: it is a set"):
        save_checkpoint({"rng": {"py": {1, 2}}}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [
    b"", b"hello world\n" * 10, random.Random(0).randbytes(3000), random.Random(1).randbytes(3000),
    b"PK\x03\x04" + bytes(200)], ids=["empty", "text", "random0", "random1", "zip-header"])
def test_unreadable_bytes_are_a_clear_error(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(ScratchMLMError, match="cannot be read") as caught:
        load_checkpoint(path)
    assert_one_clean_line(str(caught.value))


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, keep):
    path = save_checkpoint({"step": 1, "w": torch.randn(1000)}, tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    with pytest.raises(ScratchMLMError, match="cannot be read") as caught:
        load_checkpoint(path)
    assert_one_clean_line(str(caught.value))


def test_foreign_missing_and_directory_paths(tmp_path):
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ScratchMLMError, match="not a scratchmlm checkpoint .*without format_version"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ScratchMLMError, match="not a scratchmlm checkpoint .*holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(ScratchMLMError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ScratchMLMError, match="is not a file .*directory"):
        load_checkpoint(tmp_path)


def test_unopenable_file_is_a_clear_error(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")

    def no_permission(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "open", no_permission, raising=False)   # as root, chmod 000 would not do
    with pytest.raises(ScratchMLMError, match="cannot be opened: Permission denied. Check the file's permissions"):
        load_checkpoint(path)


def test_old_and_future_formats_are_refused(tmp_path):
    torch.save({"format_version": 1, "step": 1}, tmp_path / "old.pt")
    with pytest.raises(ScratchMLMError, match="older scratchmlm .*cannot be verified"):
        load_checkpoint(tmp_path / "old.pt")
    torch.save({"format_version": 3, "step": 1}, tmp_path / "new.pt")
    with pytest.raises(ScratchMLMError, match="format_version 3, but this scratchmlm reads format 2"):
        load_checkpoint(tmp_path / "new.pt")


class Evil:
    """Any class: unpickling it would import and run code, so weights_only loading refuses it."""


@pytest.mark.parametrize("value, reason", [
    (Evil(), "Unsupported global: GLOBAL .*Evil was not an allowed global"),
    (os.system, "Trying to load unsupported GLOBAL .*system whose module .* is blocked"),
], ids=["class", "os.system"])
def test_pickled_code_is_refused_without_unsafe_advice(tmp_path, value, reason):
    torch.save({"format_version": FORMAT_VERSION, "x": value}, tmp_path / "evil.pt")
    with pytest.raises(ScratchMLMError, match=f"cannot be read .*UnpicklingError: {reason}") as caught:
        load_checkpoint(tmp_path / "evil.pt")
    assert_one_clean_line(str(caught.value))


def test_reason_is_stripped_of_escape_codes_and_advice(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")

    def load_refusing(*args, **kwargs):
        raise pickle.UnpicklingError(
            "Weights only load failed. Re-running with `weights_only` set to `False` will likely succeed.\n"
            "Only do it if you \x1b[1mtrust\x1b[0m the source. WeightsUnpickler error: \x1b[1mBad\x1b[0m opcode 7"
            + " in frame" * 40 + ". Please use `torch.serialization.add_safe_globals`.")

    monkeypatch.setattr(torch, "load", load_refusing)
    with pytest.raises(ScratchMLMError, match=r"checkpoint: UnpicklingError: Bad opcode 7 in frame in frame") as caught:
        load_checkpoint(path)
    assert_one_clean_line(str(caught.value))
    assert str(caught.value).endswith("in fr...). Use the run's other checkpoint (best.pt / last.pt) or retrain.")


@pytest.mark.parametrize("tamper", [
    lambda state: state["model"]["w"].mul_(1.0001),
    lambda state: state["model"].update(w=state["model"]["w"].reshape(2, 2)),   # same bytes, other shape
    lambda state: state.update(step=3.0),                                      # same value, other type
    lambda state: state.update(betas=list(state["betas"])),
    lambda state: state["vocab"].append("b"),
    lambda state: state.pop("note"),
    lambda state: state.pop("sha256"),
], ids=["value", "shape", "int-to-float", "tuple-to-list", "appended", "key-removed", "no-digest"])
def test_changed_contents_are_detected(tmp_path, tamper):
    path = save_checkpoint(sample_state(), tmp_path / "last.pt")
    raw = torch.load(path, weights_only=True)
    tamper(raw)
    torch.save(raw, path)
    with pytest.raises(ScratchMLMError, match="is corrupted: its contents do not match the sha256"):
        load_checkpoint(path)


def test_single_bit_flips_are_caught_or_harmless(tmp_path):
    """Each flipped file fails with ScratchMLMError, or (a bit torch never reads) loads identical."""
    original = save_checkpoint({"step": 7, "vocab": ["a", "b"], "model": {"w": torch.randn(3000)}}, tmp_path / "a.pt")
    expected = load_checkpoint(original)
    data = original.read_bytes()
    assert len(data) > 12_000
    detected = 0
    for i in range(40):
        bit = 8 * len(data) * (2 * i + 1) // 80   # 40 evenly spaced bits
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path = tmp_path / f"flip{i}.pt"
        path.write_bytes(bytes(flipped))
        try:
            loaded = load_checkpoint(path)
        except ScratchMLMError:
            detected += 1
        else:
            assert_identical(loaded, expected)
    assert detected >= 36


def test_required_keys_and_types(tmp_path):
    path = save_checkpoint({"step": "3", "model": {}, "done": True}, tmp_path / "last.pt")
    assert load_checkpoint(path, required={"model": dict, "step": (str, int)})["model"] == {}
    with pytest.raises(ScratchMLMError, match=r"last.pt lacks 'optimizer' \(dict\)"):
        load_checkpoint(path, required={"model": dict, "optimizer": dict})
    with pytest.raises(ScratchMLMError, match="'step' should be int or float, got str"):
        load_checkpoint(path, required={"step": (int, float)})
    with pytest.raises(ScratchMLMError, match="'done' should be int, got bool"):
        load_checkpoint(path, required={"done": int})


def test_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    stale = [tmp_path / "last.ptab12cd34.tmp", tmp_path / "last.ptx_y9z0w1.tmp"]
    others = [tmp_path / "best.ptab12cd34.tmp", tmp_path / "last.pt2ab12cd34.tmp", tmp_path / "last.pt.tmp",
              tmp_path / "notes.txt"]
    for path in stale + others:
        path.write_bytes(b"half a checkpoint")
    save_checkpoint({"step": 1}, tmp_path / "last.pt")
    assert sorted(tmp_path.iterdir()) == sorted(others + [tmp_path / "last.pt"])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_mode_follows_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = save_checkpoint({"step": 1}, tmp_path / "last.pt")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)          # the temporary file is written, then the disk is full
    with pytest.raises(ScratchMLMError, match=re.escape(f"Could not write checkpoint {path}: No space left on device "
                                                        f"(the previous checkpoint is kept). Free some disk space")):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert list(tmp_path.glob("*.tmp")) == []


def test_interrupted_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)        # Ctrl-C with the temporary file half done
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert list(tmp_path.glob("*.tmp")) == []
