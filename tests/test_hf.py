"""Your BERT is BERT: scratchmlm's ``BertMLM`` and Hugging Face's ``BertForMaskedLM`` compute the same
logits and gradients with the same weights, both ways, and an exported run loads and fills masks in
``transformers`` as it does in scratchmlm. Nothing is downloaded: every BERT here is built from a
``BertConfig`` and randomly initialised."""

import contextlib
import copy
import io
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForMaskedLM  # noqa: E402

from scratchmlm.harness.build import build_model  # noqa: E402
from scratchmlm.harness.cli import main  # noqa: E402
from scratchmlm.harness.config import ModelConfig, preset  # noqa: E402
from scratchmlm.errors import ScratchMLMError  # noqa: E402
from scratchmlm.harness.hf import from_transformers, to_transformers  # noqa: E402
from scratchmlm.model import BertMLM  # noqa: E402
from scratchmlm.harness.run_dir import load_run  # noqa: E402
from scratchmlm.step import masked_cross_entropy  # noqa: E402

# vocab, hidden, layers, heads, intermediate, positions, activation, LayerNorm epsilon: odd head
# counts and head sizes, and epsilons other than BERT's 1e-12 (a converter that drops it shows)
SIZES = {
    "3 heads of 4": (30, 12, 2, 3, 24, 16, "gelu", 1e-12),
    "5 heads of 3, relu, eps 1e-3": (41, 15, 3, 5, 37, 20, "relu", 1e-3),
    "1 head of 32": (68, 32, 1, 1, 64, 32, "gelu", 1e-12),
    "7 heads of 2, eps 1e-5": (23, 14, 2, 7, 20, 12, "gelu", 1e-5),
}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def random_bert(size: str, dtype=torch.float64, seed: int = 0) -> BertForMaskedLM:
    """A randomly initialised BertForMaskedLM in eval mode, every parameter moved off its initial
    value (LayerNorm gains off 1, biases off 0, both token types used) so a misplaced one shows."""
    vocab, hidden, layers, heads, intermediate, positions, activation, eps = SIZES[size]
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=positions, hidden_act=activation,
                        layer_norm_eps=eps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config).to(dtype).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def padded_batch(vocab: int, positions: int, seed: int = 1):
    """ids ``[3, seq]`` with padding (id 0) at the ends of two rows, the attention mask (1 = a real
    token) and token types 0 then 1 (a sentence pair)."""
    rng = torch.Generator().manual_seed(seed)
    seq = min(positions, 11)
    ids = torch.randint(3, vocab, (3, seq), generator=rng)
    attention_mask = torch.ones(3, seq, dtype=torch.long)
    attention_mask[1, seq - 3:] = 0
    attention_mask[2, 2:] = 0
    ids[attention_mask == 0] = 0
    token_types = (torch.arange(seq) >= seq // 2).long().expand(3, seq) * attention_mask
    return ids, attention_mask, token_types


def hf_logits(hf_model, ids, attention_mask, token_types):
    return hf_model(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_types).logits


def our_logits(model, ids, attention_mask, token_types):
    return model(ids, key_padding_mask=attention_mask == 0, token_type_ids=token_types)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("size", SIZES)
def test_logits_are_equal_through_both_converters(size, dtype):
    hf_model = random_bert(size, dtype)
    batch = padded_batch(hf_model.config.vocab_size, hf_model.config.max_position_embeddings)
    with torch.no_grad():
        expected = hf_logits(hf_model, *batch)
        ours = from_transformers(hf_model)
        assert isinstance(ours, BertMLM) and not ours.training and ours.embeddings.token.weight.dtype == dtype
        assert (our_logits(ours, *batch) - expected).abs().max() < TOLERANCE[dtype]
        back = to_transformers(ours)
        assert not back.training
        assert (hf_logits(back, *batch) - expected).abs().max() < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("size", SIZES)
def test_a_bert_built_by_scratchmlm_computes_what_its_conversion_computes(size, dtype):
    vocab, hidden, layers, heads, intermediate, positions, activation, eps = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        ours = BertMLM(vocab, hidden, heads, layers, intermediate, positions, activation=activation,
                       layer_norm_eps=eps).to(dtype).eval()
        with torch.no_grad():
            for parameter in ours.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    batch = padded_batch(vocab, positions, seed=4)
    with torch.no_grad():
        expected = our_logits(ours, *batch)
        assert (hf_logits(to_transformers(ours), *batch) - expected).abs().max() < TOLERANCE[dtype]


@pytest.mark.parametrize("size", SIZES)
def test_gradients_of_every_parameter_are_equal(size):
    """One masked-LM loss, backward in both: every gradient, carried to Hugging Face's names by the
    same converter as the weights, equals Hugging Face's (the [PAD] row, which only the tied decoder
    reaches, included)."""
    hf_model = random_bert(size)
    ours = from_transformers(hf_model)
    ids, attention_mask, token_types = padded_batch(hf_model.config.vocab_size, hf_model.config.max_position_embeddings)
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    labels[attention_mask == 0] = -100

    hf_model(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_types, labels=labels).loss.backward()
    loss, _ = masked_cross_entropy(our_logits(ours, ids, attention_mask, token_types), labels)
    loss.backward()

    gradients = copy.deepcopy(ours)
    with torch.no_grad():
        for gradient, parameter in zip(gradients.parameters(), ours.parameters()):
            gradient.copy_(parameter.grad)
    converted = to_transformers(gradients).state_dict()
    names = dict(hf_model.named_parameters())
    assert sum(p.numel() for p in names.values()) == ours.num_parameters()     # nothing left out
    for name, parameter in names.items():
        assert (converted[name] - parameter.grad).abs().max() < 1e-10, name
    assert names["bert.embeddings.word_embeddings.weight"].grad[0].abs().max() > 0   # from the decoder


@pytest.mark.parametrize("size", ["3 heads of 4", "5 heads of 3, relu, eps 1e-3"])
def test_round_trips_give_identical_state_dicts(size):
    hf_model = random_bert(size, torch.float32)
    back = to_transformers(from_transformers(hf_model))
    settings = {**hf_model.config.to_dict(), "architectures": ["BertForMaskedLM"]}   # what save_pretrained writes
    assert back.config.to_dict() == settings
    theirs, again = hf_model.state_dict(), back.state_dict()
    assert list(again) == list(theirs)
    assert all(torch.equal(again[name], theirs[name]) for name in theirs)

    ours = build_model(preset("bert").model, seed=3)
    there_and_back = from_transformers(to_transformers(ours)).state_dict()
    assert list(there_and_back) == list(ours.state_dict())
    assert all(torch.equal(there_and_back[name], tensor) for name, tensor in ours.state_dict().items())


def test_tied_weights_stay_tied():
    hf_model = to_transformers(build_model(preset("bert").model, seed=0))
    word_embeddings = hf_model.bert.embeddings.word_embeddings.weight
    assert hf_model.cls.predictions.decoder.weight is word_embeddings
    assert hf_model.num_parameters() == build_model(preset("bert").model, seed=0).num_parameters()
    ours = from_transformers(hf_model)
    ours.embeddings.token.weight.data[5].add_(1.0)       # the decoder reads the same tensor
    ids = torch.tensor([[5, 6, 7]])
    changed = our_logits(ours, ids, torch.ones_like(ids), torch.zeros_like(ids))
    unchanged = hf_logits(hf_model, ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert not torch.allclose(changed[..., 5], unchanged[..., 5])


def test_what_does_not_convert_is_refused_in_one_line():
    seed_model = build_model(ModelConfig(), seed=0)
    with pytest.raises(ScratchMLMError, match="Only a BertMLM converts.*--preset bert"):
        to_transformers(seed_model)
    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=8, hidden_act="gelu_new")
    with pytest.raises(ScratchMLMError, match="hidden_act is 'gelu_new'"):
        from_transformers(BertForMaskedLM(config))
    config.hidden_act, config.attention_probs_dropout_prob = "gelu", 0.0
    with pytest.raises(ScratchMLMError, match="one dropout"):
        from_transformers(BertForMaskedLM(config))


# -- an exported run, as a user meets it ---------------------------------------------------------

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n") * 30


def cli_json(run_cli, *args):
    """The command's stdout, all of it one JSON document."""
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def trained_bert_run(tmp_path_factory):
    """A tiny BERT run (--preset bert, 40 steps) and its transformers export."""
    folder = tmp_path_factory.mktemp("bert")
    (folder / "text.txt").write_text(TEXT)
    run_dir = folder / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--preset", "bert", "--data", str(folder / "text.txt"), "--run-dir", str(run_dir),
                     "--steps", "40", "--d-model", "24", "--num-heads", "3", "--num-layers", "2", "--d-ff", "48",
                     "--batch-size", "16", "--warmup", "20", "--valid-windows", "32", "--eval-every", "40",
                     "--sample-every", "1000", "--quiet"]) == 0
        assert main(["export", str(run_dir), "--format", "transformers"]) == 0
    return run_dir, run_dir / "transformers"


def test_an_exported_run_loads_in_transformers_with_the_same_logits(trained_bert_run):
    run_dir, exported = trained_bert_run
    model, tokenizer, _, _ = load_run(run_dir, "best", "cpu")
    hf_model = BertForMaskedLM.from_pretrained(exported).eval()
    assert hf_model.cls.predictions.decoder.weight is hf_model.bert.embeddings.word_embeddings.weight
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    text = "Or to take [MASK]rms against a sea"
    ids = tokenizer.encode(text)
    assert hf_tokenizer(text)["input_ids"] == ids.tolist()
    with torch.no_grad():
        assert (hf_model(input_ids=ids[None]).logits - model(ids[None])).abs().max() < 1e-5


def test_the_fill_mask_pipeline_gives_the_fill_mask_command_s_answers(run_cli, trained_bert_run):
    """scratchmlm fill-mask scores only real characters (renormalised without the specials); asked for
    the same candidates (``targets``) and renormalised alike, the pipeline gives the same top 5."""
    run_dir, exported = trained_bert_run
    text = "Whether 'tis nob[MASK]er in the [MASK]"
    expected = cli_json(run_cli, "fill-mask", run_dir, text, "--json")
    tokenizer = load_run(run_dir, "best", "cpu")[1]
    fill = transformers.pipeline("fill-mask", model=str(exported), device="cpu")
    real = tokenizer.vocab[tokenizer.first_real_id:]
    answers = fill(text, targets=real, top_k=len(real))
    assert len(answers) == len(expected) == 2
    for ours, theirs in zip(expected, answers):
        total = sum(candidate["score"] for candidate in theirs)
        theirs = sorted(theirs, key=lambda candidate: -candidate["score"])[:5]
        assert [c["token"] for c in theirs] == [c["token"] for c in ours]
        assert [c["token_str"] for c in theirs] == [c["token_str"] for c in ours]
        for mine, other in zip(ours, theirs):
            assert abs(other["score"] / total - mine["score"]) < 1e-5


def test_a_seed_run_does_not_export_to_transformers(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--data", str(tmp_path / "text.txt"), "--run-dir", str(tmp_path / "run"), "--steps", "1",
                     "--d-model", "16", "--num-heads", "2", "--num-layers", "1", "--d-ff", "16",
                     "--valid-windows", "8", "--eval-every", "1", "--quiet"]) == 0
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["export", str(tmp_path / "run"), "--format", "transformers"]) != 0
    assert "Only a BertMLM converts" in stderr.getvalue() and "--preset bert" in stderr.getvalue()
    assert not (tmp_path / "run" / "transformers").exists()


def test_export_replaces_an_earlier_export_but_nothing_else(trained_bert_run, tmp_path):
    run_dir, exported = trained_bert_run
    before = (exported / "model.safetensors").read_bytes()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(run_dir), "--format", "transformers"]) == 0     # the same folder again
    assert (exported / "model.safetensors").read_bytes() == before
    (tmp_path / "notes.txt").write_text("mine")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["export", str(run_dir), "--format", "transformers", "--out", str(tmp_path)]) != 0
    assert "not a scratchmlm transformers export" in stderr.getvalue()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
