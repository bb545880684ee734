"""Machine-readable output as a script meets it: ``--json`` on evaluate, fill-mask, sample and env
puts one JSON document alone on stdout, with the values the Python API gives; ``train --quiet``
and ``TQDM_DISABLE=1`` silence the progress bar even on a terminal. The command line runs in this
process (``run_cli``, see conftest.py)."""

import hashlib
import json
import platform

import numpy
import pytest
import tokenizers
import torch

import scratchmlm as sm
from scratchmlm.harness.build import RunData
from scratchmlm.corpus import TINY_SHAKESPEARE_SHA256, data_dir
from scratchmlm.evaluate import pseudo_perplexity
from scratchmlm.classroom.notebook import demo_run_dir


@pytest.fixture
def run_json(run_cli):
    """``run_json(*args, env=None)``: run a command and parse its whole stdout as one JSON document."""
    def run(*args, env=None):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout           # no colour codes, whatever --color says
        return json.loads(result.stdout)
    return run


def assert_close(actual, expected, where="result"):
    """Equal structures; floats equal to 1e-6 relative (JSON and another thread count may round the last
    bit apart)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-6), where
    else:
        assert actual == expected, where


@pytest.fixture(scope="module")
def demo():
    return sm.load_run(demo_run_dir(), device="cpu")


@pytest.mark.slow
def test_evaluate_json_gives_the_python_apis_scores(run_json, demo):
    text = "To be, or not to be, that is the question"
    out = run_json("evaluate", demo_run_dir(), "--json", "--text", text)
    model, tokenizer, config, state = demo
    data = RunData.prepare(config.train, tokenizer=tokenizer)
    result = sm.evaluate(model, data.valid)
    assert out["step"] == state["step"] and out["checkpoint"] == "best"
    assert out["validation"] == {"windows": len(data.valid), "seq_len": config.train.seq_len,
                                 "scored_positions": result.overall.count, "fingerprint": data.valid.fingerprint}
    assert_close(out["model"], result.to_dict(), "model")
    assert_close(out["baselines"], {baseline.name: baseline.to_dict() for baseline in data.baselines()}, "baselines")
    assert set(out["baselines"]) == {"bigram infill", "unigram"}
    ids = tokenizer.encode(text, strict=True, parse_special=False)
    assert out["pseudo_perplexity"]["characters"] == len(text)
    assert out["pseudo_perplexity"]["value"] == pytest.approx(
        pseudo_perplexity(model, ids, tokenizer.mask_id, config.train.seq_len), rel=1e-6)


def test_fill_mask_json_is_one_list_of_pipeline_records_per_mask(run_json, demo):
    text = "To be, or not to b[MASK], th[MASK]t is"
    out = run_json("fill-mask", demo_run_dir(), text, "--top-k", 3, "--json")
    model, tokenizer, _, _ = demo
    predictions = sm.fill_mask(model, tokenizer, text, 3)
    assert len(out) == 2 and [len(records) for records in out] == [3, 3]
    for records, prediction in zip(out, predictions):
        assert [set(record) for record in records] == [{"score", "token", "token_str", "sequence"}] * 3
        assert [r["token_str"] for r in records] == [c.token for c in prediction.candidates]
        assert [r["token"] for r in records] == [tokenizer.token_to_id[c.token] for c in prediction.candidates]
        assert [r["score"] for r in records] == pytest.approx([c.score for c in prediction.candidates], rel=1e-6)
        assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    # each sequence fills its own [MASK] and leaves the other one
    assert [r["sequence"] for r in out[0]] == [text.replace("[MASK]", r["token_str"], 1) for r in out[0]]
    assert [r["sequence"] for r in out[1]] == [f"To be, or not to b[MASK], th{r['token_str']}t is" for r in out[1]]


def test_sample_json_gives_per_prompt_records_with_per_position_correctness(run_json, demo):
    prompts = ["To be, or not to be, that is the", "Now is the w[MASK]nter of our"]
    out = run_json("sample", demo_run_dir(), "--prompt", prompts[0], "--prompt", prompts[1], "--seed", 3,
                   "--color", "always", "--json")
    model, tokenizer, config, _ = demo
    masker = sm.BertMasker.from_config(tokenizer, config.train)
    assert out == sm.fill_prompts(model, tokenizer, prompts, masker, torch.Generator().manual_seed(3)).to_records()

    masked, typed = out
    assert masked["text"] == prompts[0] and masked["positions"]
    shown = masker(tokenizer.encode(prompts[0])[None], torch.Generator().manual_seed(3)).inputs[0]
    assert masked["masked"] == tokenizer.decode(shown) != prompts[0]      # what the model saw
    for position in masked["positions"]:
        i = position["position"]
        assert position["expected"] == prompts[0][i] and masked["filled"][i] == position["predicted"]
        assert position["correct"] == (position["predicted"] == position["expected"])
        assert position["shown"] in tokenizer.vocab and position["shown"] != "[PAD]"
    assert masked["masked"].count("[MASK]") == sum(p["shown"] == "[MASK]" for p in masked["positions"])
    # a [MASK] typed by the user: filled, with no known answer
    (fill,) = typed["positions"]
    assert (fill["position"], fill["expected"], fill["shown"], fill["correct"]) == (12, None, "[MASK]", None)
    assert typed["text"] == typed["masked"] == prompts[1]
    assert typed["filled"] == prompts[1].replace("[MASK]", fill["predicted"])


def test_a_failing_json_command_prints_one_error_line_and_no_json(run_cli):
    result = run_cli("fill-mask", demo_run_dir(), "no mask here", "--json")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("scratchmlm: error: ") and result.stderr.count("\n") == 1


def test_env_json_reports_versions_the_corpus_threads_and_device(run_json):
    out = run_json("env", "--json")
    assert out["versions"]["scratchmlm"] == sm.__version__ and out["versions"]["torch"] == torch.__version__
    assert out["versions"]["python"] == platform.python_version()
    assert out["versions"]["numpy"] == numpy.__version__ and out["versions"]["tokenizers"] == tokenizers.__version__
    corpus_path = data_dir() / "tinyshakespeare.txt"
    assert out["data_dir"] == str(data_dir())
    assert out["corpus"] == {"path": str(corpus_path), "present": True,
                             "sha256": hashlib.sha256(corpus_path.read_bytes()).hexdigest(),
                             "expected_sha256": TINY_SHAKESPEARE_SHA256, "matches": True}
    assert out["torch_threads"] == torch.get_num_threads()
    assert out["auto_device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_env_says_when_the_corpus_is_missing_or_not_the_expected_one(run_cli, run_json, tmp_path):
    out = run_json("env", "--json", env={"SCRATCHMLM_DATA_DIR": tmp_path})
    assert out["data_dir"] == str(tmp_path)
    assert (out["corpus"]["present"], out["corpus"]["sha256"], out["corpus"]["matches"]) == (False, None, None)
    (tmp_path / "tinyshakespeare.txt").write_text("not the corpus")
    result = run_cli("env", env={"SCRATCHMLM_DATA_DIR": tmp_path})
    assert result.returncode == 0, result.stderr
    assert f"{hashlib.sha256(b'not the corpus').hexdigest()} -- NOT the expected" in result.stdout
    assert torch.__version__ in result.stdout and "device 'auto'" in result.stdout
    assert not list(tmp_path.glob("*.part"))                       # env never downloads


# -- train --quiet and TQDM_DISABLE, on a terminal ------------------------------------------------

TINY_RUN = ["--no-plots", "--steps", 20, "--warmup", 10, "--eval-every", 20, "--log-every", 5, "--valid-windows", 16,
            "--seq-len", 16, "--batch-size", 8, "--num-layers", 1, "--d-model", 16, "--num-heads", 2, "--d-ff", 32]


@pytest.mark.parametrize("flags, env, bar, chatter", [
    ((), {"TQDM_DISABLE": None}, True, True),      # the control: a terminal shows the bar
    (("--quiet",), {"TQDM_DISABLE": None}, False, False),
    ((), {"TQDM_DISABLE": "1"}, False, True),
], ids=["default", "quiet", "TQDM_DISABLE"])
def test_quiet_and_tqdm_disable_silence_the_progress_bar_on_a_terminal(run_cli, tmp_path, flags, env, bar, chatter):
    """stderr is a terminal (``isatty()``), where tqdm draws its bar; stdout a pipe."""
    result = run_cli("train", "--run-dir", tmp_path / "run", *TINY_RUN, *flags, env=env, stderr_tty=True)
    status, stdout, terminal = result.returncode, result.stdout, result.stderr
    assert status == 0, terminal
    assert ("step/s" in terminal) == bar
    assert ("scratchmlm: training" in terminal) == chatter and ("fills correct" in stdout) == chatter
    assert "step 20: validation top-1" in stdout and f"run directory: {tmp_path / 'run'}" in stdout


def test_quiet_still_prints_errors(run_cli, tmp_path):
    result = run_cli("train", "--quiet", "--run-dir", tmp_path / "run", "--d-model", 30, "--num-heads", 8)
    assert result.returncode == 2 and "scratchmlm: error: d_model (30) must be divisible" in result.stderr
