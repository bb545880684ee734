"""Reliability: no dead-end runs, no unbounded work, every untrusted byte checked.

Each test is one way a user (or a damaged file) could break scratchmlm; the command line is called
in-process (``run_cli``, see conftest.py), except where the process itself (signals at start-up, the
modules a fresh interpreter imports) is what is tested.
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import scratchmlm
from scratchmlm.errors import ScratchMLMError
from scratchmlm.files import write_atomically
from scratchmlm.harness.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["--no-plots", "--num-layers", "1", "--d-model", "16", "--num-heads", "2", "--d-ff", "32", "--seq-len", "16",
        "--batch-size", "4", "--valid-windows", "8", "--log-every", "1", "--eval-every", "2", "--warmup", "2",
        "--sample-every", "1000", "--quiet"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog.\nTHE QUICK BROWN FOX!\n" * 20)
    return path


def train(run_cli, run, text_file, *extra):
    return run_cli("train", "--run-dir", run, "--data", text_file, *TINY, *extra)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, text_file, run_cli):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = train(run_cli, run, text_file, "--steps", "4")
    assert result.returncode == 0, result.stderr
    return run


def copy_run(run, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def one_error_line(result, status=2) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# -- 1. dead-end runs -------------------------------------------------------------------------------

def test_a_run_stopped_before_its_first_checkpoint_starts_again_or_resumes(run_cli, trained_run, text_file, tmp_path):
    """Failed before: 'already exists' / 'has no checkpoints/last.pt'."""
    def killed_at_start_up(run):         # what a kill after config.json, before checkpoints/last.pt, leaves
        for name in ("checkpoints", "samples", "plots"):
            shutil.rmtree(run / name, ignore_errors=True)      # plots/ only exists once drawn
        baselines = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"baseline"' in line]
        (run / "metrics.jsonl").write_text("\n".join(baselines) + "\n")

    run = copy_run(trained_run, tmp_path)
    killed_at_start_up(run)
    result = train(run_cli, run, text_file, "--steps", "2")
    assert result.returncode == 0 and "afresh" in result.stderr, result.stderr
    assert (run / "checkpoints" / "last.pt").is_file()
    killed_at_start_up(run)
    result = run_cli("train", "--resume", "--run-dir", run, "--steps", "2", "--quiet")
    assert result.returncode == 0 and "afresh" in result.stderr, result.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2


def test_a_run_whose_first_save_failed_can_be_started_again(run_cli, text_file, tmp_path, monkeypatch):
    """Failed before: the second command said 'already exists'."""
    from scratchmlm.harness import checkpoint

    def disk_full(file):
        raise OSError(28, "No space left on device")

    def write_on_a_full_disk(path, contents, what):          # the checkpoint's bytes meet a full disk
        return write_atomically(path, disk_full, what)

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "write_atomically", write_on_a_full_disk)
        failed = train(run_cli, run, text_file, "--steps", "2")
    assert "No space left" in one_error_line(failed)
    assert train(run_cli, run, text_file, "--steps", "2").returncode == 0


def test_a_directory_holding_other_files_is_never_taken_over(run_cli, text_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert "already exists" in one_error_line(train(run_cli, run, text_file, "--steps", "2"))
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_sigterm_during_start_up_leaves_a_run_that_resumes(run_cli, text_file, tmp_path):
    """Failed before: SIGTERM killed the process (no handler yet); the same command then said 'already
    exists' and --resume 'has no checkpoints/last.pt'. The signal goes to a subprocess; the commands
    after it run in-process."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "scratchmlm", "train", "--run-dir", str(run), "--data", str(text_file),
               *TINY, "--steps", "2", "--valid-windows", "2000"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    again = run_cli(*command[3:])                                  # the same command
    assert again.returncode == 0, again.stderr
    resumed = run_cli("train", "--resume", "--run-dir", run, "--steps", "4", "--quiet")
    assert resumed.returncode == 0, resumed.stderr


# -- 2. Ctrl-C at start-up; a light --version --------------------------------------------------------

def test_version_imports_no_torch():
    """Failed before: the package __init__ imported torch. A fresh interpreter: this one has torch."""
    code = ("import sys\nfrom scratchmlm.harness import cli\ntry:\n    cli.main(['--version'])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().endswith("False"), result.stdout + result.stderr


def test_lazy_package_keeps_every_public_name():
    for name in scratchmlm.__all__:
        assert getattr(scratchmlm, name) is not None
    assert scratchmlm.train_step is scratchmlm.step.train_step
    with pytest.raises(AttributeError):
        scratchmlm.no_such_name


@pytest.mark.slow
def test_ctrl_c_during_start_up_is_one_line_and_status_130(text_file, tmp_path):
    """Failed before: a KeyboardInterrupt traceback from importing torch in scratchmlm/__init__."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "scratchmlm", "train", "--run-dir", str(tmp_path / "run"),
                                "--data", str(text_file), *TINY, "--steps", "100000"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.15)       # start-up takes seconds; a run of 2 steps took 2.5 s in all, and on a busy machine
    process.send_signal(signal.SIGINT)  # this process can wake late: a long run still gets the Ctrl-C
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


# -- 3. untrusted arguments ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["fill-mask", "RUN", "the qu\udcffick b[MASK]"],
    ["sample", "RUN", "--checkpoint", "last", "--prompt", "the \udcff quick"],
    ["evaluate", "RUN", "--text", "the \udcff quick"],
    ["plot", "RUN", "--prompt", "the \udcff quick"],
])
def test_text_that_is_not_valid_unicode_is_refused(run_cli, trained_run, command):
    """Failed before: UnicodeEncodeError from the surrogate escapes of non-UTF-8 argv bytes."""
    argv = [str(trained_run) if part == "RUN" else part for part in command]
    assert "UTF-8" in one_error_line(run_cli(*argv))


@pytest.mark.parametrize("argv", [
    ["sample", "RUN", "--seed", str(10 ** 26)],
    ["train", "--seed", str(10 ** 26)],
    ["train", "--tokenizer", "bpe", "--vocab-size", str(10 ** 23)],
    ["train", "--tokenizer", "bpe", "--vocab-size", str(10 ** 12)],
    ["fill-mask", "RUN", "a[MASK]", "--top-k", str(10 ** 30)],
])
def test_integers_beyond_what_the_library_can_use_are_refused(run_cli, trained_run, tmp_path, argv):
    """Failed before (sample --seed, --vocab-size): an overflow from deep inside torch / tokenizers."""
    argv = [str(trained_run) if part == "RUN" else part for part in argv]
    if argv[0] == "train":
        argv += ["--run-dir", str(tmp_path / "run")]
    result = run_cli(*argv)                    # argparse: usage, then the error
    assert result.returncode == 2
    assert "at most" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_symlink_loop_as_data_is_refused(run_cli, tmp_path):
    """Failed before: RuntimeError('Symlink loop') from Path.resolve."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert "loop" in one_error_line(run_cli("train", "--run-dir", tmp_path / "run", "--data", loop, *TINY))
    assert not (tmp_path / "run").exists()


def main_without_blocking(run_cli, argv, fifo):
    """``run_cli(*argv)`` in a thread; if it still waits after 30 s, the FIFO gets a writer and the test fails."""
    status = []

    def call():
        try:
            status.append(run_cli(*argv))
        except BaseException as error:          # noqa: BLE001  (raised again in the test's thread)
            status.append(error)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():                       # unblock the reader (each time it opens the FIFO), then fail
        while worker.is_alive():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:                     # no reader at this moment
                pass
            worker.join(timeout=0.1)
        pytest.fail(f"{argv[0]} blocked on the FIFO {fifo}")
    if isinstance(status[0], BaseException):
        raise status[0]
    return status[0]


def test_a_fifo_as_config_is_refused_without_blocking(run_cli, tmp_path):
    """Failed before: open() of the FIFO waited forever for a writer."""
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    assert "not a regular file" in one_error_line(main_without_blocking(run_cli, ["train", "--config", fifo], fifo))


def test_a_fifo_inside_a_run_is_refused_without_blocking(run_cli, trained_run, tmp_path):
    """Failed before: reading tokenizer.json waited forever for a writer."""
    run = copy_run(trained_run, tmp_path)
    (run / "tokenizer.json").unlink()
    os.mkfifo(run / "tokenizer.json")
    result = main_without_blocking(run_cli, ["fill-mask", run, "a[MASK]", "--checkpoint", "last"],
                                   run / "tokenizer.json")
    assert "not a regular file" in one_error_line(result)


# -- 4. huge but valid values: bounded work --------------------------------------------------------

def test_the_noam_plot_samples_a_long_schedule():
    """Failed before: one Python noam_lr call per step (10**7 points here; 10**8 never finished)."""
    from scratchmlm.noam import noam_lr
    from scratchmlm.harness.plots import plot_noam

    figure = plot_noam(128, 3_000_000, 1.0, 10 ** 7)
    steps, rates = figure.axes[0].lines[0].get_data()
    assert len(steps) <= 10_002 and steps[0] == 1 and steps[-1] == 10 ** 7
    assert 3_000_000 in list(steps)                       # the peak itself is drawn
    for step, rate in list(zip(steps, rates))[::500]:
        assert rate == pytest.approx(noam_lr(int(step), 128, 3_000_000), rel=1e-12)


def test_training_curves_of_a_record_at_a_huge_step_sample_the_schedule(trained_run):
    """Failed before: the learning-rate panel evaluated the schedule at every step up to 10**7."""
    from scratchmlm.harness.config import RunConfig
    from scratchmlm.harness.plots import plot_training_curves
    from scratchmlm.harness.run_dir import read_metrics

    records = read_metrics(trained_run / "metrics.jsonl")
    last = [r for r in records if r["type"] == "train"][-1]
    config = RunConfig.load(trained_run / "config.json")
    figure = plot_training_curves([*records, {**last, "step": 10 ** 7}], config=config)
    schedule = next(line for axes in figure.axes for line in axes.lines if line.get_label() == "Noam schedule")
    assert len(schedule.get_xdata()) <= 10_002 and schedule.get_xdata()[-1] == 10 ** 7


@pytest.mark.parametrize("field, value", [("d_model", 10 ** 30), ("num_layers", 10 ** 7), ("d_ff", 2 ** 62)])
@pytest.mark.parametrize("command", ["fill-mask", "evaluate", "plot", "export"])
def test_a_config_asking_for_an_impossible_model_is_refused_before_building(run_cli, trained_run, tmp_path,
                                                                             field, value, command):
    """Failed before: d_model 10**30 raised a TypeError; num_layers 10**7 hung building layers."""
    run = copy_run(trained_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"][field] = value
    config["model"]["num_heads"] = 1
    (run / "config.json").write_text(json.dumps(config))
    argv = {"fill-mask": ["fill-mask", str(run), "a[MASK]"], "evaluate": ["evaluate", str(run)],
            "plot": ["plot", str(run)], "export": ["export", str(run)]}[command]
    error = one_error_line(run_cli(*argv, "--checkpoint", "last"))
    assert "GiB" in error or "at most" in error


# -- 5. silent wrong results ---------------------------------------------------------------------------

def relabel_one_tensor(path: Path, new_dtype: str) -> None:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    name = next(n for n, e in header.items() if n != "__metadata__" and e["dtype"] == "F32")
    header[name]["dtype"] = new_dtype
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (length - len(encoded))
    assert len(encoded) == length
    path.write_bytes(raw[:8] + encoded + raw[8 + length:])


def test_weights_relabelled_as_another_dtype_are_refused(run_cli, trained_run, tmp_path):
    """Failed before: F32 bytes read as I32 were cast silently; fill-mask printed garbage, exit 0."""
    out = tmp_path / "export"
    assert run_cli("export", trained_run, "--out", out, "--checkpoint", "last").returncode == 0
    relabel_one_tensor(out / "model.safetensors", "I32")
    assert "int32" in one_error_line(run_cli("fill-mask", out, "a[MASK]"))
    with pytest.raises(ScratchMLMError, match="float32"):
        scratchmlm.load_pretrained(out, device="cpu")


def test_nan_weights_are_one_line_in_fill_mask(run_cli, trained_run, tmp_path):
    """Failed before: fill-mask --json crashed on NaN scores (evaluate reports the diverged model, null)."""
    run = copy_run(trained_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    save_checkpoint(state, path)
    assert "not finite" in one_error_line(run_cli("fill-mask", run, "a[MASK]", "--json", "--checkpoint", "last"))
    evaluated = run_cli("evaluate", run, "--json", "--checkpoint", "last")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["pseudo_perplexity"]["value"] is None


# -- 6. stored records: every field checked --------------------------------------------------------

@pytest.mark.parametrize("change", [
    lambda r: {**r, "by_kind": []} if r["type"] == "eval" else r,
    lambda r: {**r, "by_kind": {**r["by_kind"], "mask": {**r["by_kind"]["mask"], "top1": "high"}}}
    if r["type"] == "eval" else r,
    lambda r: {**r, "name": 7} if r["type"] == "baseline" else r,
])
def test_damaged_metrics_fields_are_one_line_errors(run_cli, trained_run, tmp_path, change):
    """Failed before: a TypeError / AttributeError in plot (and in the code formatting the error)."""
    run = copy_run(trained_run, tmp_path)
    records = [change(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert "metrics.jsonl line" in one_error_line(run_cli("plot", run, "--checkpoint", "last"))
    one_error_line(run_cli("train", "--resume", "--run-dir", run, "--steps", "6", "--quiet"))


@pytest.mark.parametrize("field, value", [("step", -5), ("rng_by_rank", []), ("evals_without_improvement", -1),
                                          ("last_eval_step", 99)])
def test_checkpoint_fields_out_of_range_are_refused_and_nothing_is_lost(run_cli, trained_run, tmp_path, field, value):
    """Failed before: step -5 was resumed and deleted every metrics record; rng_by_rank [] an IndexError."""
    run = copy_run(trained_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state[field] = value
    save_checkpoint(state, path)
    metrics = (run / "metrics.jsonl").read_text()
    assert field in one_error_line(run_cli("train", "--resume", "--run-dir", run, "--steps", "6", "--quiet"))
    assert (run / "metrics.jsonl").read_text() == metrics


# -- 7. --init-from ------------------------------------------------------------------------------------

def test_init_from_an_export_and_resume_after_the_source_moved(run_cli, trained_run, text_file, tmp_path):
    """Failed before: KeyError 'model' from an export; 'not a run directory' once the source moved."""
    source = tmp_path / "export"
    assert run_cli("export", trained_run, "--out", source, "--checkpoint", "last").returncode == 0
    run = tmp_path / "adapted"
    adapted = run_cli("train", "--run-dir", run, "--data", text_file, "--init-from", source, "--seq-len", "16",
                      "--batch-size", "4", "--valid-windows", "8", "--log-every", "1", "--eval-every", "2",
                      "--warmup", "2", "--quiet", "--steps", "2")
    assert adapted.returncode == 0, adapted.stderr
    source.rename(tmp_path / "moved")
    resumed = run_cli("train", "--resume", "--run-dir", run, "--steps", "4", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


# -- 8. one line, not torch's warnings --------------------------------------------------------------

def test_a_refused_pickle_payload_is_one_line_without_torch_warnings(tmp_path):
    """Failed before: torch's two-line UserWarning about the legacy format came first."""
    import pickle

    path = tmp_path / "old.pt"
    path.write_bytes(pickle.dumps({"format_version": 2, "x": 1}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ScratchMLMError, match="cannot be read"):
            load_checkpoint(path)
    assert not caught, [str(w.message) for w in caught]
