"""Each rule lives in one place: a module checks its own constructor arguments, and the configuration
says the very same thing because it calls the module's check. Every message is one line that says
what to fix. The resume rule is one function for the command line and the Trainer, and
TQDM_DISABLE means what tqdm itself makes of it."""

import pytest
import torch
from tqdm.utils import envwrap

from scratchmlm.errors import ScratchMLMError
from scratchmlm.harness import cli
from scratchmlm.harness.config import ModelConfig, RunConfig, TrainConfig, check_resumed_config
from scratchmlm.harness.environment import progress_bar_disabled
from scratchmlm.masking import BertMasker, SpanMasker
from scratchmlm.model import BertMLM, Dropout, MultiHeadAttention, TransformerMLM
from scratchmlm.tokenizer import CharTokenizer

TOKENIZER = CharTokenizer.from_text("to be or not to be, that is the question\n")


def message_of(build) -> str:
    with pytest.raises(ValueError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message and message.endswith("."), message
    return message


@pytest.mark.parametrize("d_model, num_heads, fix", [(30, 8, "Try num_heads 6."), (100, 8, "Try num_heads 5."),
                                                     (7, 2, "Try num_heads 1.")])
def test_heads_that_do_not_divide_d_model_read_the_same_everywhere(d_model, num_heads, fix):
    from_config = message_of(lambda: ModelConfig(d_model=d_model, num_heads=num_heads).validate())
    assert from_config.startswith(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
    assert from_config.endswith(fix)
    for build in (lambda: MultiHeadAttention(d_model, num_heads),
                  lambda: TransformerMLM(68, d_model=d_model, num_heads=num_heads, num_layers=1, d_ff=8),
                  lambda: BertMLM(68, d_model=d_model, num_heads=num_heads, num_layers=1, d_ff=8)):
        assert message_of(build) == from_config


@pytest.mark.parametrize("p", [1e-6, 1.0, -0.1, 1 - 1e-6])
def test_a_dropout_the_module_refuses_the_configuration_refuses_alike(p):
    from_config = message_of(lambda: ModelConfig(dropout=p).validate())
    assert from_config.startswith("dropout must be 0 or between 1/65536 and 1 - 1/65536")
    assert message_of(lambda: Dropout(p)) == from_config


@pytest.mark.parametrize("probabilities", [
    dict(select_prob=0.0), dict(select_prob=1.5), dict(mask_token_prob=-0.1), dict(random_token_prob=1.2),
    dict(mask_token_prob=0.9, random_token_prob=0.2),
])
def test_masking_probabilities_read_the_same_in_the_masker_and_the_configuration(probabilities):
    from_config = message_of(lambda: TrainConfig(**probabilities).validate())
    assert message_of(lambda: BertMasker.for_tokenizer(TOKENIZER, **probabilities)) == from_config


@pytest.mark.parametrize("probabilities", [dict(select_prob=True), dict(random_token_prob=float("nan"))])
def test_the_masker_refuses_what_is_no_probability(probabilities):
    """(The configuration refuses these earlier, as values of the wrong type.)"""
    assert "must be a probability" in message_of(lambda: BertMasker.for_tokenizer(TOKENIZER, **probabilities))


@pytest.mark.parametrize("span_mean, select_prob, fragment", [
    (0.5, 0.15, "span_mean must be at least 1"),
    (1.0, 0.6, "must be at most span_mean / (span_mean + 1) = 0.500"),
    (3.0, 1.0, "must be at most span_mean / (span_mean + 1) = 0.750"),
])
def test_span_settings_read_the_same_in_the_masker_and_the_configuration(span_mean, select_prob, fragment):
    """A select_prob out of reach was found only when training built the masker; 1.0 passed both."""
    from_config = message_of(lambda: TrainConfig(masking="span", span_mean=span_mean,
                                                 select_prob=select_prob).validate())
    assert fragment in from_config
    assert message_of(lambda: SpanMasker.for_tokenizer(TOKENIZER, span_mean=span_mean,
                                                       select_prob=select_prob)) == from_config


def test_the_highest_reachable_select_prob_is_accepted_and_reached():
    masker = SpanMasker.for_tokenizer(TOKENIZER, span_mean=3.0, select_prob=0.75)
    TrainConfig(masking="span", span_mean=3.0, select_prob=0.75).validate()
    ids = torch.full((400, 200), TOKENIZER.first_real_id)
    share = masker(ids, torch.Generator().manual_seed(0)).selected.float().mean().item()
    assert abs(share - 0.75) < 0.01         # 80,000 positions, correlated in spans: sd about 0.003


def test_the_resume_rule_lets_only_steps_change():
    saved = RunConfig().to_dict()
    check_resumed_config(saved, RunConfig(train=TrainConfig(steps=9000)).to_dict(), "in config.json")
    changed = RunConfig(ModelConfig(d_model=64), TrainConfig(steps=9000, seed=3))
    with pytest.raises(ScratchMLMError) as caught:
        check_resumed_config(saved, changed.to_dict(), "in runs/a/config.json")
    assert str(caught.value) == ("The configuration differs from the one in runs/a/config.json (model.d_model, "
                                 "train.seed); a resumed run keeps its settings, only --steps may change. Restore "
                                 "them, or start a new run.")


TINY = ["--no-plots", "--num-layers", "1", "--d-model", "16", "--num-heads", "2", "--d-ff", "32", "--seq-len", "16",
        "--batch-size", "4", "--valid-windows", "8", "--eval-every", "2", "--warmup", "2", "--quiet"]


@pytest.mark.slow
def test_the_command_line_resumes_with_the_same_rule(tmp_path, capsys):
    (tmp_path / "text.txt").write_text("to be or not to be, that is the question\n" * 40)
    run = ["--run-dir", str(tmp_path / "run")]
    assert cli.main(["train", *run, "--data", str(tmp_path / "text.txt"), *TINY, "--steps", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["train", *run, "--resume", "--d-model", "32", "--steps", "4"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "differs from the one in" in error and "(model.d_model)" in error
    # naming a setting at the value the run already has changes nothing
    assert cli.main(["train", *run, "--resume", "--d-model", "16", "--steps", "4"]) == 0


def test_a_model_error_on_the_command_line_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), "--d-model", "30", "--num-heads", "8"]) == 2
    error = capsys.readouterr().err
    assert error == ("scratchmlm: error: d_model (30) must be divisible by num_heads (8): each head gets "
                     "d_model / num_heads dimensions. Try num_heads 6.\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["", "0", "1", "false", "no", "off", "True"])
def test_tqdm_disable_means_what_tqdm_makes_of_it(monkeypatch, value):
    """tqdm sets its ``disable`` from TQDM_DISABLE through tqdm.utils.envwrap (bool of the text)."""
    monkeypatch.setenv("TQDM_DISABLE", value)

    @envwrap("TQDM")
    def tqdm_disables(disable=False):
        return disable

    assert progress_bar_disabled() == tqdm_disables()
    monkeypatch.delenv("TQDM_DISABLE")
    assert progress_bar_disabled() is False
