"""Export: safetensors files written and read through the safetensors package (damaged files are
one-line errors naming the file), and an exported folder that gives the run's logits bit for bit
without unpickling anything."""

import json
import pickle
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import scratchmlm as sm
from scratchmlm.harness.export import load_safetensors, save_safetensors
from scratchmlm.classroom.notebook import demo_run_dir
from scratchmlm.sample import fill_mask_records


def mixed_tensors() -> dict[str, torch.Tensor]:
    """Every dtype the format names that torch has, odd shapes, a scalar, an empty tensor and a
    non-contiguous view (stored as its C-order elements)."""
    rng = torch.Generator().manual_seed(0)
    values = torch.randn(3, 5, generator=rng)
    return {
        "f32": values, "f64": values.double() / 3, "f16": values.half(), "bf16": values.bfloat16(),
        "i64": torch.randint(-2**62, 2**62, (4,), generator=rng), "i32": torch.randint(-2**31, 2**31 - 1, (2, 3),
                                                                                        generator=rng).int(),
        "i16": torch.arange(-7, 7, dtype=torch.int16), "i8": torch.arange(-128, 128, 17, dtype=torch.int8),
        "u8": torch.arange(0, 256, 9, dtype=torch.uint8), "bool": values > 0,
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4), "transposed": values.t(),
    }


def assert_same(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype and actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


def test_the_safetensors_package_reads_our_file_exactly(tmp_path):
    tensors = mixed_tensors()
    save_safetensors(tensors, tmp_path / "ours.safetensors", {"format": "pt", "note": "ünïcode"})
    assert_same(load_file(tmp_path / "ours.safetensors"), tensors)
    with safe_open(tmp_path / "ours.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "note": "ünïcode"}
    header_length = struct.unpack("<Q", (tmp_path / "ours.safetensors").read_bytes()[:8])[0]
    assert (8 + header_length) % 8 == 0            # the data starts aligned


def test_we_read_a_file_the_safetensors_package_wrote_exactly(tmp_path):
    tensors = {name: t.contiguous() for name, t in mixed_tensors().items()}
    save_file(tensors, tmp_path / "theirs.safetensors", metadata={"format": "pt", "who": "safetensors"})
    loaded, metadata = load_safetensors(tmp_path / "theirs.safetensors")
    assert_same(loaded, tensors)
    assert metadata == {"format": "pt", "who": "safetensors"}


def _text_file(header: str, data: bytes, header_length: int | None = None) -> bytes:
    encoded = header.encode()
    return struct.pack("<Q", len(encoded) if header_length is None else header_length) + encoded + data


def _file(header, data: bytes, header_length: int | None = None) -> bytes:
    return _text_file(json.dumps(header), data, header_length)


FOUR_FLOATS = struct.pack("<4f", 1, 2, 3, 4)
GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}


@pytest.mark.parametrize("raw, message", [
    (b"\x01\x02", "header too small"),
    (_file(GOOD, FOUR_FLOATS, header_length=10**6), "invalid header length"),
    (_file(GOOD, FOUR_FLOATS[:-1]), "file not fully covered"),
    (_file(GOOD, FOUR_FLOATS + b"\0"), "file not fully covered"),
    (_text_file("{oops", FOUR_FLOATS), "invalid JSON in header"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "invalid UTF-8 in header"),
    (_file([1, 2], b""), "invalid type: sequence"),
    (_file({**GOOD, "a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}, FOUR_FLOATS),
     "unknown variant `F7`"),
    (_file({**GOOD, "a": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}, FOUR_FLOATS),
     "invalid type: sequence, expected string"),
    (_file({**GOOD, "a": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}, FOUR_FLOATS),
     "expected usize"),
    (_file({**GOOD, "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, FOUR_FLOATS),
     "invalid shape, data type, or offset"),
    (_file({**GOOD, "a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, FOUR_FLOATS),
     "integer `-2`, expected usize"),
    (_file({**GOOD, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, FOUR_FLOATS),
     "invalid offset for tensor `b`"),
    (_file({**GOOD, "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, FOUR_FLOATS),
     "invalid offset for tensor `b`"),
    (_file({**GOOD, "a": {"dtype": "F32", "shape": [2]}}, FOUR_FLOATS), "missing field `data_offsets`"),
    (_file({**GOOD, "__metadata__": {"step": 3}}, FOUR_FLOATS), "integer `3`, expected a string"),
    (_text_file(json.dumps(GOOD)[:-1] + ', "a": ' + json.dumps(GOOD["a"]) + "}", FOUR_FLOATS), "names 'a' twice"),
])
def test_a_damaged_file_is_a_clear_error(tmp_path, raw, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(sm.ScratchMLMError) as error:
        load_safetensors(path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_the_intact_file_of_those_tests_reads(tmp_path):
    """The damaged files above differ from this one in one place each."""
    (tmp_path / "good.safetensors").write_bytes(_file(GOOD, FOUR_FLOATS))
    tensors, metadata = load_safetensors(tmp_path / "good.safetensors")
    assert tensors["a"].tolist() == [1, 2] and tensors["b"].tolist() == [3, 4] and metadata == {}


# -- exporting a run -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return sm.export_run(demo_run_dir(), tmp_path_factory.mktemp("export") / "demo")


def test_the_export_holds_three_plain_files(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (exported / "tokenizer.json").read_bytes() == (demo_run_dir() / "tokenizer.json").read_bytes()
    description = json.loads((exported / "config.json").read_text())
    assert {"model": description["model"], "train": description["train"]} == \
        sm.RunConfig.load(demo_run_dir() / "config.json").to_dict()
    assert description["scratchmlm_version"] == sm.__version__ and description["format_version"] == 1
    model, _, _, state = sm.load_run(demo_run_dir(), device="cpu")
    assert description["step"] == state["step"] and description["valid_fingerprint"] == state["valid_fingerprint"]
    assert_same(load_file(exported / "model.safetensors"), model.state_dict())


def test_the_loaded_export_gives_the_runs_logits_bit_for_bit(exported):
    run_model, run_tokenizer, run_config, _ = sm.load_run(demo_run_dir(), device="cpu")
    model, tokenizer, config = sm.load_pretrained(exported, device="cpu")
    assert tokenizer.vocab == run_tokenizer.vocab and config == run_config
    assert not model.training
    ids = torch.randint(0, tokenizer.vocab_size, (8, config.train.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids), run_model(ids))


def test_loading_an_export_never_unpickles(exported, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an export must load without unpickling anything")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(module, name, refuse)
    model, tokenizer, _ = sm.load_pretrained(exported, device="cpu")
    assert model.num_parameters() > 0 and tokenizer.vocab_size == model.vocab_size


def test_load_run_accepts_an_exported_folder(exported):
    _, _, _, run_state = sm.load_run(demo_run_dir(), device="cpu")
    _, tokenizer, config, state = sm.load_run(exported, device="cpu")
    assert state["step"] == run_state["step"] and state["valid_fingerprint"] == run_state["valid_fingerprint"]
    assert state["vocab"] == tokenizer.vocab and state["checkpoint"] == "best"


def test_load_pretrained_explains_what_is_wrong(exported, tmp_path):
    with pytest.raises(sm.ScratchMLMError, match="It is a run directory: use load_run"):
        sm.load_pretrained(demo_run_dir())
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (broken / name).write_bytes((exported / name).read_bytes())
    description = json.loads((exported / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**description, "model": {**description["model"], "num_layers": 5}}))
    with pytest.raises(sm.ScratchMLMError, match="does not fit the model in config.json"):
        sm.load_pretrained(broken)
    (broken / "config.json").write_text(json.dumps({**description, "format_version": 2}))
    with pytest.raises(sm.ScratchMLMError, match="format_version 2"):
        sm.load_pretrained(broken)


def test_export_command_writes_and_rewrites_a_folder_the_other_commands_read(run_cli, tmp_path):
    out = tmp_path / "exported"
    for _ in range(2):                                   # a second export replaces the first
        result = run_cli("export", demo_run_dir(), "--out", out)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [str(out / name) for name in ("model.safetensors", "config.json",
                                                                        "tokenizer.json")]
    result = run_cli("fill-mask", out, "To be, or not to b[MASK]", "--json")
    assert result.returncode == 0, result.stderr
    model, tokenizer, _, _ = sm.load_run(demo_run_dir(), device="cpu")
    expected = fill_mask_records(sm.fill_mask(model, tokenizer, "To be, or not to b[MASK]"), tokenizer)
    assert json.loads(result.stdout) == expected


def test_export_refuses_a_folder_holding_other_files(run_cli, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("export", demo_run_dir(), "--out", tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("scratchmlm: error: ") and "notes.txt" in result.stderr
    assert result.stderr.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# -- the package's limits, and what it is given ----------------------------------------------------

def test_a_header_over_the_packages_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as file:                     # sparse: 100 MiB + 1 of header, no disk used
        file.write(struct.pack("<Q", 100 * 2**20 + 1))
        file.truncate(8 + 101 * 2**20)
    with pytest.raises(sm.ScratchMLMError) as error:
        load_safetensors(path)
    assert "header too large" in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("tensors, message", [
    ({"a": torch.zeros(2, dtype=torch.complex128)}, "Cannot store a torch.complex128 tensor"),
    ({"a": [1.0, 2.0]}, "only tensors go into a safetensors file, got a list"),
    ({"__metadata__": torch.zeros(2)}, "cannot be named '__metadata__'"),
])
def test_what_safetensors_cannot_hold_is_one_line_and_writes_nothing(tmp_path, tensors, message):
    with pytest.raises(sm.ScratchMLMError) as error:
        save_safetensors(tensors, tmp_path / "model.safetensors")
    assert message in str(error.value) and "\n" not in str(error.value) and list(tmp_path.iterdir()) == []


def test_a_missing_weights_file_is_one_line(tmp_path):
    with pytest.raises(sm.ScratchMLMError, match="does not exist; check the path"):
        load_safetensors(tmp_path / "model.safetensors")
