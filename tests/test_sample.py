import io

import pytest
import torch

from scratchmlm import BertMasker, CharTokenizer, ScratchMLMError, TransformerMLM
from scratchmlm.sample import (FilledPrompt, Samples, fill_mask, fill_prompts, format_fill_mask, use_color,
                               validation_prompts)


def example() -> Samples:
    # "cat" with fills at 0 (correct) and 2 (wrong: predicted 'r', expected 't'); then a user [MASK]
    return Samples([FilledPrompt(list("cat"), list("car"), [True, False, True]),
                    FilledPrompt(["a", None], ["a", " "], [False, True])])


def test_plain_marks_wrong_fills_without_colour():
    text = example().to_plain()
    assert text.splitlines() == ["car[t]", "a{␣}", "1/2 fills correct"]
    assert "\x1b[" not in text


def test_ansi_colours_by_correctness():
    text = example().to_ansi()
    assert "\x1b[30;42mc\x1b[0m" in text            # correct fill on green
    assert "\x1b[97;41mr\x1b[0m" in text            # wrong fill on red ...
    assert "[t]" in text                            # ... with the expected character beside it
    assert "\x1b[2ma\x1b[0m" in text                # context dim
    assert "\x1b[97;44m␣\x1b[0m" in text            # a user's [MASK]: no known answer


def test_html_rendering():
    html = example()._repr_html_()
    assert html.startswith("<div") and "background:#2e7d32" in html and "background:#c62828" in html
    assert "title=\"expected 't'\"" in html and "<sub" in html
    assert "1/2 fills correct" in html


def test_colour_choice(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color("auto", Tty()) and not use_color("auto", io.StringIO())
    assert use_color("always", io.StringIO()) and not use_color("never", Tty())
    monkeypatch.setenv("NO_COLOR", "")          # no-color.org: only a non-empty value disables colour
    assert use_color("auto", Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color("auto", Tty())
    assert example().render("auto", Tty()) == example().to_plain()
    with pytest.raises(ScratchMLMError):
        use_color("sometimes")


@pytest.fixture(scope="module")
def little_model():
    tokenizer = CharTokenizer("abcdefgh ")
    torch.manual_seed(0)
    return TransformerMLM(tokenizer.vocab_size, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=12), tokenizer


def test_fill_prompts_masks_and_predicts(little_model):
    model, tokenizer = little_model
    masker = BertMasker.for_tokenizer(tokenizer, select_prob=0.5)
    samples = fill_prompts(model, tokenizer, ["abc defgh", "h[MASK]a"], masker, torch.Generator().manual_seed(0))
    first, second = samples.prompts
    assert "".join(first.expected) == "abc defgh" and any(first.is_fill)
    assert second.expected == ["h", None, "a"] and second.is_fill == [False, True, False]
    assert len(second.predicted) == 3


def test_prompt_errors(little_model):
    model, tokenizer = little_model
    masker = BertMasker.for_tokenizer(tokenizer)
    with pytest.raises(ScratchMLMError, match="not in the tokenizer's alphabet"):
        fill_prompts(model, tokenizer, ["abc Z"], masker, torch.Generator())
    with pytest.raises(ScratchMLMError, match="at most 12"):
        fill_prompts(model, tokenizer, ["a" * 13], masker, torch.Generator())
    with pytest.raises(ScratchMLMError, match="no \\[MASK\\]"):
        fill_mask(model, tokenizer, "abc")


def test_fill_mask_gives_top_k_real_characters(little_model):
    model, tokenizer = little_model
    predictions = fill_mask(model, tokenizer, "ab[MASK]d[MASK]", top_k=3)
    assert [p.position for p in predictions] == [2, 4]
    for prediction in predictions:
        chars = [c.token for c in prediction.candidates]
        probs = [c.score for c in prediction.candidates]
        assert len(chars) == 3 and all(c in "abcdefgh " for c in chars)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    first, second = predictions[0].candidates[0], predictions[1].candidates[0]
    assert first.sequence == f"ab{first.token}d[MASK]"          # this mask filled, the other kept
    assert second.sequence == f"ab[MASK]d{second.token}"
    assert "[MASK] #2 (position 4)" in format_fill_mask("ab[MASK]d[MASK]", predictions)


def test_validation_prompts(corpus_text):
    valid = corpus_text[int(0.9 * len(corpus_text)):]
    prompts = validation_prompts(valid, 5, 32, torch.Generator().manual_seed(0))
    assert len(prompts) == 5 and all(16 <= len(p) <= 32 and p in valid for p in prompts)
