"""The real command line as a user meets it: called in this process (``run_cli``, see conftest.py),
with stdout and stderr captured as pipes; in a subprocess only where the process itself is what is
tested (signals, a file-size limit)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--num-layers", "2", "--d-model", "32", "--num-heads", "4", "--d-ff", "64", "--no-plots"]


def scratchmlm(*args, env_extra=None, cwd=None):
    """The command in a subprocess, for the tests of what only a process has."""
    env = {**os.environ, "TQDM_DISABLE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "scratchmlm", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO, timeout=600)


def copy_run(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, run_cli):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli("train", "--run-dir", run, "--steps", 60, "--warmup", 20, "--eval-every", 30,
                     "--log-every", 10, "--batch-size", 16, "--valid-windows", 256, "--color", "always", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    assert not list((run / "plots").glob("*.png"))         # --no-plots: 'scratchmlm plot' draws them below
    return run, result


def test_train_prints_coloured_samples_and_the_run_directory(trained_run):
    run, result = trained_run
    assert "\x1b[" in result.stdout and "fills correct" in result.stdout
    assert f"run directory: {run}" in result.stdout
    assert "validation top-1" in result.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["num_layers"] == 2 and config["train"]["steps"] == 60


def test_evaluate_prints_model_and_baselines(run_cli, trained_run):
    run, _ = trained_run
    result = run_cli("evaluate", run)
    assert result.returncode == 0, result.stderr
    assert "fingerprint" in result.stdout
    for name in ["model @60", "bigram infill", "unigram", "mask", "random", "unchanged",
                 "pseudo-perplexity of the first 1000 validation characters"]:
        assert name in result.stdout
    result = run_cli("evaluate", run, "--text", "To be, or not to be")
    assert result.returncode == 0 and "pseudo-perplexity of the text: " in result.stdout
    assert float(result.stdout.split("pseudo-perplexity of the text: ")[1]) > 1.0


@pytest.mark.parametrize("color, env, coloured", [
    ("always", {"NO_COLOR": None}, True), ("never", {"NO_COLOR": None}, False), ("auto", {"NO_COLOR": "1"}, False),
    ("auto", {"NO_COLOR": None}, False)])
def test_sample_colour_modes(run_cli, trained_run, color, env, coloured):
    run, _ = trained_run
    result = run_cli("sample", run, "--color", color, "--count", 3, env=env)
    assert result.returncode == 0, result.stderr
    assert ("\x1b[" in result.stdout) == coloured          # a pipe is not a terminal: auto = plain
    assert "fills correct" in result.stdout


def test_sample_with_a_prompt_and_fill_mask(run_cli, trained_run):
    run, _ = trained_run
    result = run_cli("sample", run, "--prompt", "To be, or not to be", "--color", "never")
    assert result.returncode == 0 and result.stdout.splitlines()[-1].endswith("fills correct")
    result = run_cli("fill-mask", run, "To be, or not to b[MASK]", "--top-k", 3)
    assert result.returncode == 0, result.stderr
    assert "[MASK] #1 (position 18):" in result.stdout


def test_plot_writes_pngs(run_cli, trained_run):
    run, _ = trained_run
    result = run_cli("plot", run)
    assert result.returncode == 0, result.stderr
    for name in ["curves.png", "noam.png", "attention_layer0_head0.png", "attention_grid.png"]:
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_to_more_steps(run_cli, trained_run, tmp_path):
    run = copy_run(trained_run[0], tmp_path)          # the other tests read the run at step 60
    result = run_cli("train", "--run-dir", run, "--resume", "--steps", 70, "--color", "never")
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 70
    result = run_cli("train", "--run-dir", run, "--resume", "--d-model", 64)
    assert result.returncode == 2 and "only --steps may change" in result.stderr


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("scratchmlm: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr   # one line, said last
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_error_missing_data_file(run_cli, tmp_path):
    assert_one_line_error(run_cli("train", "--data", tmp_path / "nope.txt", "--run-dir", tmp_path / "r"),
                          "does not exist")


def test_error_non_utf8_data_file(run_cli, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("hello " * 50).encode() + "café".encode("latin-1"))
    assert_one_line_error(run_cli("train", "--data", path, "--run-dir", tmp_path / "r"),
                          "not UTF-8", "byte offset 303")


def test_error_offline_without_the_corpus(run_cli, tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    tried = []

    def offline(url, *args, **kwargs):      # what urlopen raises without a network
        tried.append(url)
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = run_cli("train", "--run-dir", tmp_path / "r", env={"SCRATCHMLM_DATA_DIR": tmp_path / "empty"})
    assert_one_line_error(result, "could not be downloaded", "SCRATCHMLM_DATA_DIR")
    assert tried and tried[0].startswith("https://")


def test_error_existing_run_directory(run_cli, trained_run):
    run, _ = trained_run
    assert_one_line_error(run_cli("train", "--run-dir", run), "already exists", "--resume")


def test_error_truncated_checkpoint(run_cli, trained_run, tmp_path):
    run, _ = trained_run
    copy = copy_run(run, tmp_path)
    best = copy / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    assert_one_line_error(run_cli("evaluate", copy), "cannot be read")


def test_error_checkpoint_with_another_vocabulary(run_cli, trained_run, tmp_path):
    run, _ = trained_run
    copy = copy_run(run, tmp_path)
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    del vocab[max(vocab, key=vocab.get)]      # drop the last character
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert_one_line_error(run_cli("sample", copy), "different vocabulary")


def test_error_heads_do_not_divide_d_model(run_cli, tmp_path):
    assert_one_line_error(run_cli("train", "--d-model", 100, "--num-heads", 8, "--run-dir", tmp_path / "r"),
                          "must be divisible by num_heads")


def test_error_prompt_with_unknown_characters(run_cli, trained_run):
    run, _ = trained_run
    assert_one_line_error(run_cli("sample", run, "--prompt", "naïve € prompt"), "not in the tokenizer's alphabet")
    assert_one_line_error(run_cli("fill-mask", run, "caf[MASK] €"), "not in the tokenizer's alphabet")


def test_error_loss_becomes_nan(run_cli, tmp_path, corpus_text):
    # an absurd learning rate blows the weights up with the first update
    data = tmp_path / "text.txt"
    data.write_text(corpus_text[:50_000])
    run = tmp_path / "r"
    result = run_cli("train", "--data", data, "--run-dir", run, "--steps", 200, "--warmup", 1,
                     "--noam-factor", "1e30", "--clip-norm", "1e30", "--log-every", 1, "--eval-every", 1,
                     *TINY_MODEL)
    assert_one_line_error(result, "became nan at step 1", "checkpoints/last.pt (step 0) is kept",
                          "Start a new run with a lower --noam-factor")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)   # the broken weights were not saved
    assert state["step"] == 0 and all(torch.isfinite(t).all() for t in state["model"].values())
    # (keeping an earlier good checkpoint is tested in test_train.py)


def test_help_lists_commands_and_settings(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ["train", "evaluate", "sample", "fill-mask", "plot"]:
        assert command in result.stdout
    result = run_cli("train", "--help")
    for flag in ["--d-model", "--steps", "--resume", "--device", "--config", "--noam-factor", "--color"]:
        assert flag in result.stdout


def test_config_file_and_flags(run_cli, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"train": {"steps": 5, "eval_every": 5, "seq_len": 16, "valid_windows": 32},
                                  "model": {"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 32}}))
    result = run_cli("train", "--config", config, "--steps", 4, "--run-dir", tmp_path / "r", "--color", "never")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["train"]["steps"] == 4 and saved["model"]["num_layers"] == 1 and saved["model"]["max_len"] == 32
    config.write_text(json.dumps({"train": {"stepz": 5}}))
    assert_one_line_error(run_cli("train", "--config", config, "--run-dir", tmp_path / "r2"), "stepz")


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "-1"], "seed must be in"),
    (["--adam-beta1", "1.5"], "adam_beta1 must be in [0, 1)"),
    (["--adam-eps", "-1"], "adam_eps must be positive"),
    (["--noam-factor", "0"], "noam_factor must be positive"),
    (["--select-prob", "0"], "select_prob must be a probability in (0, 1]"),
    (["--batch-size", "0"], "batch_size must be a positive integer"),
    (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:abc"], "Unknown device"),
    (["--seq-len", "2000000"], "fewer than one window"),
    (["--init-std", "nan"], "init_std must be a finite number"),
    (["--init-std", "-1"], "init_std must be positive"),
    (["--dropout", "1e-6"], "dropout must be 0 or between 1/65536"),
    (["--d-model", "65536", "--num-heads", "1"], "GiB to train, more than this machine's"),
    (["--batch-size", "100000000"], "GiB to train, more than this machine's"),
])
def test_error_bad_training_settings(run_cli, tmp_path, args, fragment):
    assert_one_line_error(run_cli("train", "--run-dir", tmp_path / "r", *args), fragment)


def test_error_run_dir_is_a_file_and_bad_config_paths(run_cli, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_cli("train", "--run-dir", tmp_path / "file"), "is a file")
    assert_one_line_error(run_cli("train", "--config", tmp_path, "--run-dir", tmp_path / "r"), "cannot be read")


def test_error_resume_misuse(run_cli, trained_run, tmp_path):
    run, _ = trained_run
    assert_one_line_error(run_cli("train", "--run-dir", run, "--resume", "--steps", 10), "already at step")
    assert_one_line_error(run_cli("train", "--run-dir", run, "--resume", "--config", run / "config.json"),
                          "--config cannot be combined with --resume")
    assert_one_line_error(run_cli("train", "--run-dir", tmp_path / "none", "--resume"), "Cannot resume")


def test_error_bad_sampling_arguments(run_cli, trained_run, tmp_path):
    run, _ = trained_run
    assert_one_line_error(run_cli("fill-mask", run, "ab[MASK]", "--top-k", 0), "--top-k must be an integer of at least 1")
    assert_one_line_error(run_cli("sample", run, "--count", 0), "at least 1")
    assert_one_line_error(run_cli("sample", run, "--device", "foo"), "Unknown device")
    assert_one_line_error(run_cli("plot", run, "--layer", 7), "--layer must be in 0..1")
    copy = copy_run(run, tmp_path)
    (copy / "tokenizer.json").unlink()
    assert_one_line_error(run_cli("evaluate", copy), "tokenizer.json is missing or unreadable")


def test_a_text_without_long_lines_still_trains_and_samples(run_cli, tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("\n".join(["fair", "foul", "night", "day", "king", "queen"] * 400))
    result = run_cli("train", "--data", data, "--run-dir", tmp_path / "r", "--steps", 4, "--eval-every", 2,
                     "--sample-every", 2, "--seq-len", 16, "--color", "never", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    assert "fills correct" in result.stdout


@pytest.mark.parametrize("signum, status, name", [(2, 130, "Ctrl-C"), (15, 143, "SIGTERM")])
@pytest.mark.slow
def test_ctrl_c_saves_the_run_and_it_resumes(run_cli, tmp_path, signum, status, name):
    """Ctrl-C (SIGINT) or SIGTERM finishes the step, saves checkpoints/last.pt and exits 128 + signal.

    A subprocess: the signal goes to the process, and the exit status is the process's."""
    import time

    run = tmp_path / "r"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "scratchmlm", "train", "--run-dir", str(run),
                                "--steps", "100000", "--log-every", "5", "--eval-every", "100000",
                                "--color", "never", *TINY_MODEL], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and '"type": "train"' not in (metrics.read_text() if metrics.exists() else ""):
        time.sleep(0.2)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr             # 128 + signal, as shells expect
    assert "Traceback" not in stderr and "run directory:" in stdout
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    logged = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert state["step"] >= 5 and logged[-1]["step"] == state["step"]   # nothing trained is lost
    assert f"stopped at step {state['step']} by {name}; last evaluation none yet" in stderr
    result = run_cli("train", "--run-dir", run, "--resume", "--steps", state["step"] + 3, "--color", "never")
    assert result.returncode == 0, result.stderr
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == state["step"] + 3


def test_version_and_every_flag_has_help(run_cli):
    from scratchmlm import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"scratchmlm {__version__}"
    from scratchmlm.harness.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
        devices = [a for a in command._actions if a.dest in ("device", "train.device")]
        assert not devices or devices[0].default in ("auto", None), name
    assert run_cli("train", "--activation", "tanh").returncode == 2      # choices are enforced


def test_plot_draws_the_curves_of_a_run_without_a_checkpoint(run_cli, trained_run, tmp_path):
    run, _ = trained_run
    copy = copy_run(run, tmp_path)
    shutil.rmtree(copy / "checkpoints")
    shutil.rmtree(copy / "plots")
    result = run_cli("plot", copy)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (copy / "plots").iterdir()) == ["curves.png", "noam.png"]
    assert "no attention maps" in result.stderr


def test_a_relative_data_path_works_from_another_directory(run_cli, tmp_path, corpus_text):
    (tmp_path / "text.txt").write_text(corpus_text[:40_000])
    result = run_cli("train", "--data", "text.txt", "--run-dir", "run", "--steps", 4, "--eval-every", 4,
                     "--seq-len", 16, "--valid-windows", 32, "--color", "never", *TINY_MODEL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("evaluate", "../run", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "model @4" in result.stdout


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_and_keeps_the_run(tmp_path):
    """EFBIG (``ulimit -f``) while writing: one line, non-zero exit, no traceback.

    A subprocess: the limit is the process's (in this one it would stop pytest's own writes)."""
    command = (f"ulimit -f 200; exec {sys.executable} -m scratchmlm train --run-dir {tmp_path / 'r'} "
               f"--steps 20 --eval-every 10 --color never")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode in (1, 2), result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("scratchmlm: error: ") and "Traceback" not in result.stderr
    assert "too large" in lines[-1].lower(), lines[-1]


def test_evaluate_a_diverged_checkpoint(run_cli, trained_run, tmp_path):
    from scratchmlm.harness.checkpoint import load_checkpoint, save_checkpoint

    run, _ = trained_run
    copy = copy_run(run, tmp_path)
    state = load_checkpoint(copy / "checkpoints" / "best.pt")
    state.pop("sha256", None)
    state.pop("format_version", None)
    state["model"] = {k: torch.full_like(v, float("inf")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    save_checkpoint(state, copy / "checkpoints" / "best.pt")
    result = run_cli("evaluate", copy)
    assert result.returncode == 0, result.stderr
    assert "model @" in result.stdout and "Traceback" not in result.stderr



def test_run_cli_leaves_the_process_as_it_found_it(run_cli, tmp_path):
    """The in-process command line (conftest.py) restores what a command changes (training seeds torch's
    global generator, installs signal handlers; here also an environment variable and the directory),
    so that no test depends on the ones before it."""
    import signal

    def state():
        return (torch.get_rng_state(), torch.get_num_threads(), torch.is_grad_enabled(), dict(os.environ),
                os.getcwd(), sys.argv, [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)])

    before = state()
    result = run_cli("train", "--run-dir", "run", "--steps", 1, "--eval-every", 1, "--seq-len", 16, "--batch-size", 4,
                     "--valid-windows", 8, "--quiet", *TINY_MODEL, cwd=tmp_path, env={"NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    after = state()
    assert torch.equal(after[0], before[0]) and after[1:] == before[1:]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()      # it did run, there
