"""The experiment scripts run, as a user runs them (tiny budgets), and the domain text is ours and
reproducible."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("make_domain_text", REPO / "experiments" / "make_domain_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_domain_text_is_reproducible_and_uses_the_stated_characters(tmp_path):
    generate = load_generator().generate
    text = generate(50_000, seed=0)
    assert text == generate(50_000, seed=0) != generate(50_000, seed=1)
    assert 50_000 <= len(text) < 52_000 and text.endswith("\n")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n!',-.:;?")
    assert set(text) <= allowed and set("0123456789") <= set(text)
    assert len({word.strip(".,;:?!'").lower() for word in text.split()}) > 150
    out = tmp_path / "logbook.txt"
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "make_domain_text.py"), str(out),
                             "--chars", "20000", "--seed", "3"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and out.read_text() == generate(20_000, seed=3)


@pytest.mark.slow
def test_an_experiment_script_trains_its_variants_and_writes_its_table(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "curriculum.py"), "--steps", "4",
                             "--seeds", "0", "--device", "cpu", "--out", str(tmp_path / "runs"),
                             "--results", str(tmp_path / "results")],
                            capture_output=True, text=True, timeout=600, cwd=REPO / "experiments")
    assert result.returncode == 0, result.stderr
    assert "fixed 32 x 64" in result.stdout and "16 x 128, then 32 x 64" in result.stdout
    assert "fingerprint 7fb70d363975" in result.stdout
    record = json.loads((tmp_path / "results" / "curriculum" / "results.json").read_text())
    assert [run["steps"] for run in record["runs"]] == [4, 4] and record["seeds"] == [0]


@pytest.mark.slow
def test_the_speed_ablation_runs_each_variant_in_turn_and_tabulates_them(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "speed_ablation.py"),
                             "--variants", "fast", "batch-128", "--max-steps", "20", "--eval-every", "10",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    runs = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("fast", "batch-128")}
    assert runs["fast"]["config"]["model"]["dropout"] == 0.0 and runs["fast"]["config"]["train"]["warmup"] == 500
    assert runs["batch-128"]["config"]["train"]["batch_size"] == 128
    assert runs["batch-128"]["config"]["train"]["warmup"] == 250
    assert [point["step"] for point in runs["fast"]["curve"]] == [10, 20]
    assert runs["batch-128"]["tokens"] == 2 * runs["fast"]["tokens"] == 2 * 20 * 64 * 32
    table = (tmp_path / "table.md").read_text()
    assert "| fast |" in table and "| batch-128 |" in table and "not in 20 steps" in table
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_precision_comparison_runs_both_precisions_per_seed_and_tabulates_them(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "precision_seeds.py"),
                             "--seeds", "3", "--steps", "10", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    for precision in ("fp32", "bf16"):
        config = json.loads((tmp_path / f"{precision}-seed3.config.json").read_text())["train"]
        assert (config["precision"], config["seed"], config["steps"]) == (precision, 3, 10)
        assert (config["warmup"], config["noam_factor"]) == (500, 0.5)
        records = [json.loads(line) for line in (tmp_path / f"{precision}-seed3.metrics.jsonl").open()]
        assert [r["step"] for r in records if r["type"] == "eval"][-1] == 10
    table = (tmp_path / "table.md").read_text()
    assert "| 3 | fp32 |" in table and "| 3 | bf16 |" in table
    assert "top-1 at step 10" in table and "over seeds [3]" in table


def test_the_benchmarks_flops_per_token_are_what_torch_counts_on_the_real_model():
    """MFU in bench.py rests on this count: forward and backward of the real model, every matmul."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from scratchmlm import TransformerMLM

    spec = importlib.util.spec_from_file_location("bench", REPO / "experiments" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # FLOPs per token do not depend on the batch size: the seed model on 2 rows instead of 64 is quick
    for sizes in (dict(bench.SEED, batch_size=2), dict(d_model=64, num_heads=4, num_layers=3, d_ff=192, seq_len=16,
                                                       batch_size=8, vocab_size=50)):
        model = TransformerMLM(vocab_size=sizes["vocab_size"], d_model=sizes["d_model"], num_heads=sizes["num_heads"],
                               num_layers=sizes["num_layers"], d_ff=sizes["d_ff"], max_len=sizes["seq_len"])
        ids = torch.randint(3, sizes["vocab_size"], (sizes["batch_size"], sizes["seq_len"]))
        with FlopCounterMode(display=False) as counter:
            model(ids).sum().backward()
        tokens = sizes["batch_size"] * sizes["seq_len"]
        assert bench.training_flops_per_token(**sizes) == counter.get_total_flops() / tokens
    assert round(bench.training_flops_per_token(**bench.SEED) / 1e6, 2) == 5.07      # experiments/README.md's figure


@pytest.mark.slow
def test_the_transformers_comparison_trains_all_four_models_on_the_same_batches(tmp_path):
    pytest.importorskip("transformers")
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "compare_transformers.py"), "--steps", "4",
                             "--eval-every", "2", "--valid-windows", "32", "--until", "1e-9", "--threads", "1",
                             "--out", str(tmp_path / "results.json")],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "results.json").read_text())
    arms = {arm["name"]: arm for arm in record["arms"]}
    assert list(arms) == ["scratchmlm BERT", "transformers BERT", "seed", "fast"]
    assert all(arm["tokens_per_second"] > 0 and arm["evals"][0][0] == 2 for arm in arms.values())
    assert all(arm["reached"] is not None for arm in arms.values())         # any correct guess reaches 1e-9
    # the same initial weights, batches and masks: the two BERTs score alike after the same steps
    ours, theirs = arms["scratchmlm BERT"]["evals"][0], arms["transformers BERT"]["evals"][0]
    assert abs(ours[1] - theirs[1]) < 0.01 and abs(ours[2] - theirs[2]) < 0.01
    assert "vs transformers" in result.stdout and "time to" in result.stdout
