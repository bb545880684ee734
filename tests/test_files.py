"""scratchmlm.files.write_atomically, the one way scratchmlm replaces a file: the old contents or the
new ones, never half; the temporary beside the target, flushed to disk before the rename and the
directory after it; the mode the umask gives any new file; a failure one line, with the fix."""

import errno
import os
import stat

import pytest
import torch

from scratchmlm.errors import ScratchMLMError
from scratchmlm.files import remove_leftover_temporaries, write_atomically
from scratchmlm.harness.checkpoint import load_checkpoint, save_checkpoint
from scratchmlm.harness.config import RunConfig


def test_bytes_text_and_a_writing_function_land_whole_and_nothing_else_is_left(tmp_path):
    write_atomically(tmp_path / "a.bin", b"\x00\xff\n")
    write_atomically(tmp_path / "b.txt", "ünï\ncode\n")
    write_atomically(tmp_path / "c.pt", lambda file: torch.save({"w": torch.arange(3)}, file))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff\n"
    assert (tmp_path / "b.txt").read_bytes() == "ünï\ncode\n".encode("utf-8")      # UTF-8, newlines as given
    assert torch.load(tmp_path / "c.pt", weights_only=True)["w"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.pt"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_new_file_has_the_mode_the_umask_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = write_atomically(tmp_path / "config.json", "{}\n")
        replaced = write_atomically(path, "{}\n")                  # a replacement too, not only a new file
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode and stat.S_IMODE(replaced.stat().st_mode) == mode


def half_then(error: BaseException):
    def write(file):
        file.write(b"half of the new")
        raise error
    return write


def test_a_write_failing_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_atomically(tmp_path / "last.pt", b"the old contents")
    with pytest.raises(ScratchMLMError) as caught:
        write_atomically(path, half_then(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), "checkpoint")
    message = str(caught.value)
    assert message == (f"Could not write checkpoint {path}: No space left on device (the previous checkpoint is "
                       f"kept). Free some disk space and try again.")
    assert path.read_bytes() == b"the old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_ctrl_c_midway_is_raised_as_it_is_and_keeps_the_old_file(tmp_path):
    path = write_atomically(tmp_path / "tokenizer.json", "old\n")
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, half_then(KeyboardInterrupt()))
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]


def test_a_missing_directory_is_one_line_naming_it(tmp_path):
    with pytest.raises(ScratchMLMError) as caught:
        write_atomically(tmp_path / "nowhere" / "config.json", "{}\n", "configuration")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"Could not write configuration {tmp_path / 'nowhere'}")
    assert "(nothing was written)" in message and f"Check that the directory {tmp_path / 'nowhere'} exists" in message


def test_the_file_reaches_the_disk_before_its_name_and_the_name_after_it(tmp_path, monkeypatch):
    """fsync of the temporary, then os.replace, then fsync of the directory, in that order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append("fsync directory" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "fsync file")
        real_fsync(descriptor)

    def replace(source, target):
        events.append("replace")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomically(tmp_path / "run.json", "{}\n")
    assert events == ["fsync file", "replace", "fsync directory"]


def test_the_temporary_lies_beside_the_target(tmp_path, monkeypatch):
    """Same directory, so the rename never crosses file systems (which would copy, not rename)."""
    sources = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: (sources.append(source), real_replace(source, target)))
    (tmp_path / "sub").mkdir()
    write_atomically(tmp_path / "sub" / "config.json", "{}\n")
    assert os.path.dirname(os.fspath(sources[0])) == os.fspath(tmp_path / "sub")


def test_leftover_temporaries_of_one_file_are_removed_and_nothing_else(tmp_path):
    leftovers = [tmp_path / "last.ptab12cd34.tmp", tmp_path / "last.ptx_y9z0w1.tmp"]
    others = [tmp_path / "best.ptab12cd34.tmp", tmp_path / "last.pt2ab12cd34.tmp", tmp_path / "last.pt",
              tmp_path / "notes.txt"]
    for path in leftovers + others:
        path.write_bytes(b"half")
    remove_leftover_temporaries(tmp_path / "last.pt")
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_the_writers_go_through_it(tmp_path, monkeypatch):
    """A checkpoint and a config.json that fail midway keep their old contents (they use the helper)."""
    checkpoint = save_checkpoint({"step": 1}, tmp_path / "last.pt")
    config = tmp_path / "config.json"
    RunConfig().save(config)
    before = config.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    for write in (lambda: save_checkpoint({"step": 2}, checkpoint), lambda: RunConfig().save(config)):
        with pytest.raises(ScratchMLMError, match="No space left on device"):
            write()
    monkeypatch.undo()
    assert load_checkpoint(checkpoint)["step"] == 1 and config.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "last.pt"]
