"""Named configurations: ``scratchmlm train --preset seed|fast``."""

import dataclasses
import json

import pytest

from scratchmlm.harness.config import PRESETS, RunConfig, preset
from scratchmlm.errors import ScratchMLMError


def changed_settings(config: RunConfig) -> dict:
    default = RunConfig().to_dict()
    return {f"{section}.{name}": value for section, values in config.to_dict().items()
            for name, value in values.items() if default[section][name] != value}


def test_every_preset_loads_and_validates():
    for name in PRESETS:
        config = preset(name)
        config.model.validate()
        config.train.validate()


def test_seed_preset_is_the_defaults_and_fast_changes_only_what_it_says():
    assert changed_settings(preset("seed")) == {}
    # the levers measured in experiments/results/time_to_accuracy/ (experiments/README.md)
    assert changed_settings(preset("fast")) == {"model.dropout": 0.0, "train.warmup": 500}   # factor 1: the default
    assert changed_settings(preset("bert")) == {"model.architecture": "bert", "model.norm_first": False,
                                                 "model.positional": "learned", "model.layer_norm_eps": 1e-12}
    with pytest.raises(ScratchMLMError, match="presets are seed, fast"):
        preset("fastest")


def test_train_starts_from_the_preset_and_flags_override_it(run_cli, tmp_path):
    done = run_cli("train", "--preset", "fast", "--warmup", "3", "--steps", "2", "--num-layers", "1",
                   "--batch-size", "8", "--valid-windows", "16", "--eval-every", "2", "--run-dir", tmp_path / "run",
                   "--quiet")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["dropout"] == 0.0 and saved["train"]["noam_factor"] == 1.0   # from the preset
    assert saved["train"]["warmup"] == 3 and saved["model"]["num_layers"] == 1          # from the flags


def test_preset_with_config_or_resume_is_refused(run_cli, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(RunConfig().to_dict()))
    both = run_cli("train", "--preset", "fast", "--config", config, "--run-dir", tmp_path / "a")
    assert both.returncode == 2 and "--config or --preset, not both" in both.stderr
    resumed = run_cli("train", "--preset", "fast", "--resume", "--run-dir", tmp_path / "a")
    assert resumed.returncode == 2 and "--preset cannot be combined with --resume" in resumed.stderr
    unknown = run_cli("train", "--preset", "fastest", "--run-dir", tmp_path / "b")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
