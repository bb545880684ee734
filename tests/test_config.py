"""Configurations: the seed defaults, the JSON round trip, and clear errors for every bad value."""

import json

import pytest

from scratchmlm import ModelConfig, RunConfig, ScratchMLMError, TrainConfig, TransformerMLM


def test_defaults_are_the_seed_configuration_and_round_trip(tmp_path):
    config = RunConfig()
    assert (config.model.d_model, config.model.num_heads, config.model.num_layers, config.model.d_ff) == (128, 8, 6, 256)
    assert (config.train.batch_size, config.train.seq_len, config.train.warmup, config.train.select_prob) == (64, 32, 2000, 0.15)
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config


@pytest.mark.parametrize("section, values, message", [
    ("model", {"d_model": "128"}, "d_model must be an integer"),
    ("model", {"dropout": "0.1"}, "dropout must be a number"),
    ("model", {"norm_first": 1}, "norm_first must be true or false"),
    ("model", {"num_layers": True}, "num_layers must be an integer"),
    ("model", {"activation": "tanh"}, "activation must be one of gelu, relu"),
    ("train", {"steps": 2.5}, "steps must be an integer"),
    ("train", {"data": ["a"]}, "data must be a string"),
])
def test_wrong_types_in_a_config_file_are_named(tmp_path, section, values, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({section: values}))
    with pytest.raises(ScratchMLMError, match=message):
        RunConfig.load(path)


@pytest.mark.parametrize("content, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"train": {"steps": ' + "9" * 5000 + "}}", "not valid JSON"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[1, 2]", 'JSON object {"model"'),
])
def test_hostile_config_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ScratchMLMError, match=message):
        RunConfig.load(path)


@pytest.mark.parametrize("field, value, message", [
    ("init_std", float("nan"), "init_std must be a finite number"),
    ("init_std", -1.0, "init_std must be positive"),
    ("dropout", 1e-6, "dropout must be 0 or between 1/65536"),
    ("dropout", 1.0, "dropout must be 0 or between 1/65536"),
    ("vocab_size", 0, "vocab_size must be a positive integer"),
    ("layer_norm_eps", 0.0, "layer_norm_eps must be positive"),
    ("architecture", "gpt", "architecture must be one of transformer, bert"),
    ("architecture", "bert", "bert is post-norm with learned positions: add --norm-first false --positional learned"),
])
def test_model_values_are_validated(field, value, message):
    with pytest.raises(ScratchMLMError, match=message):
        ModelConfig(**{field: value}).validate()


def test_train_values_are_validated():
    with pytest.raises(ScratchMLMError, match="noam_factor must be a finite number"):
        TrainConfig(noam_factor=float("inf")).validate()
    with pytest.raises(ScratchMLMError, match="mask_token_prob \\+ random_token_prob must be at most 1"):
        TrainConfig(mask_token_prob=0.9, random_token_prob=0.2).validate()


def test_the_model_itself_refuses_bad_sizes_and_ids():
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        TransformerMLM(vocab_size=0)
    model = TransformerMLM(vocab_size=10, d_model=16, num_heads=2, num_layers=1, d_ff=16, max_len=8)
    import torch

    with pytest.raises(ValueError, match="ids must lie in 0..9"):
        model(torch.tensor([[1, 2, 10]]))
    with pytest.raises(ValueError, match="ids must lie in 0..9"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.tensor([[1.0, 2.0]]))
