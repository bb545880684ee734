"""Masked prompts filled in by the model, and shown coloured by correctness.

A ``Samples`` object holds the filled prompts and renders three ways:

* ``to_ansi()`` for terminals: context dim, correct fills on green, wrong fills on red;
* ``_repr_html_()`` for notebooks, the same colours, with the expected character under a wrong fill;
* ``to_plain()`` with no colour at all.

Colour is never the only signal: in every form a wrong fill is followed by the expected character
in brackets, ``w[i]``, and the summary line counts the correct fills. Fills at a literal ``[MASK]``
typed by the user have no known answer and are shown in blue (``to_plain``: ``{x}``).

``fill_mask`` is the fill-mask pipeline: for each ``[MASK]`` of a text, the top-k characters with
their probabilities and the filled-in text.

``Samples.to_records()`` and ``fill_mask_records`` give both as JSON-ready records (``--json``).
"""

from __future__ import annotations

import html
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ScratchMLMError
from .evaluate import eval_mode
from .masking import BertMasker

ANSI_DIM, ANSI_RESET = "\x1b[2m", "\x1b[0m"
ANSI_CORRECT, ANSI_WRONG, ANSI_UNKNOWN = "\x1b[30;42m", "\x1b[97;41m", "\x1b[97;44m"
VISIBLE = {"\n": "⏎", " ": "␣", "\t": "⇥"}


def visible(piece: str) -> str:
    """A token with its whitespace made visible (fills and tick labels, where a blank would vanish):
    ``" "`` -> ``␣``, ``"\n"`` -> ``⏎``; a subword keeps its inner letters (``" king"`` -> ``␣king``)."""
    return "".join(VISIBLE.get(char, char) for char in piece)


@dataclass
class FilledPrompt:
    """One prompt: per position the original character (``None`` where the user typed [MASK]),
    the model's prediction, whether the position was a fill, and (when known) the token the model
    was shown there: ``[MASK]``, a random character, or the original."""

    expected: list[str | None]
    predicted: list[str]
    is_fill: list[bool]
    shown: list[str] | None = None

    @property
    def fills(self) -> list[int]:
        return [i for i, fill in enumerate(self.is_fill) if fill]

    def correct_count(self) -> tuple[int, int]:
        scored = [i for i in self.fills if self.expected[i] is not None]
        return sum(self.predicted[i] == self.expected[i] for i in scored), len(scored)

    def to_record(self) -> dict:
        """JSON-ready: ``text`` (the prompt; ``[MASK]`` where the user typed one), ``masked`` (what
        the model saw; ``None`` if not recorded), ``filled`` (the text with the model's fills), and
        per fill its position, expected, shown and predicted token and ``correct`` (``None`` where
        there is no known answer)."""
        text = ["[MASK]" if char is None else char for char in self.expected]
        shown = self.shown if self.shown is not None else [None] * len(text)
        filled = [self.predicted[i] if fill else text[i] for i, fill in enumerate(self.is_fill)]
        positions = [{"position": i, "expected": self.expected[i], "shown": shown[i], "predicted": self.predicted[i],
                      "correct": None if self.expected[i] is None else self.predicted[i] == self.expected[i]}
                     for i in self.fills]
        return {"text": "".join(text), "masked": None if self.shown is None else "".join(self.shown),
                "filled": "".join(filled), "positions": positions}


@dataclass
class Samples:
    prompts: list[FilledPrompt]

    def accuracy(self) -> tuple[int, int]:
        pairs = [prompt.correct_count() for prompt in self.prompts]
        return sum(c for c, _ in pairs), sum(n for _, n in pairs)

    def to_records(self) -> list[dict]:
        """One JSON-ready record per prompt (see ``FilledPrompt.to_record``)."""
        return [prompt.to_record() for prompt in self.prompts]

    def _summary(self) -> str:
        correct, total = self.accuracy()
        return f"{correct}/{total} fills correct" if total else "no scored fills"

    def _render(self, context, correct, wrong, unknown, line_end="\n") -> str:
        lines = []
        for prompt in self.prompts:
            parts, context_run = [], ""
            for i, char in enumerate(prompt.expected):
                if not prompt.is_fill[i]:                 # context: gathered into one run
                    context_run += visible(char) if char == "\n" else char
                    continue
                if context_run:
                    parts.append(context(context_run))
                    context_run = ""
                if char is None:
                    parts.append(unknown(visible(prompt.predicted[i])))
                elif prompt.predicted[i] == char:
                    parts.append(correct(visible(char)))
                else:
                    parts.append(wrong(visible(prompt.predicted[i]), visible(char)))
            if context_run:
                parts.append(context(context_run))
            lines.append("".join(parts))
        lines.append(self._summary())
        return line_end.join(lines)

    def to_plain(self) -> str:
        """No colour: correct fills as they are, wrong ones ``p[e]`` (predicted, expected), unknown ``{p}``."""
        return self._render(lambda c: c, lambda c: c, lambda p, e: f"{p}[{e}]", lambda p: "{" + p + "}")

    def to_ansi(self) -> str:
        return self._render(
            lambda c: f"{ANSI_DIM}{c}{ANSI_RESET}",
            lambda c: f"{ANSI_CORRECT}{c}{ANSI_RESET}",
            lambda p, e: f"{ANSI_WRONG}{p}{ANSI_RESET}{ANSI_DIM}[{e}]{ANSI_RESET}",
            lambda p: f"{ANSI_UNKNOWN}{p}{ANSI_RESET}",
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        body = self._render(
            lambda c: f'<span style="color:#888">{esc(c)}</span>',
            lambda c: f'<span style="background:#2e7d32;color:white" title="correct">{esc(c)}</span>',
            lambda p, e: (f'<span style="background:#c62828;color:white" title="expected {esc(e)!r}">'
                          f'{esc(p)}</span><sub style="color:#2e7d32">[{esc(e)}]</sub>'),
            lambda p: f'<span style="background:#1565c0;color:white" title="no known answer">{esc(p)}</span>',
            line_end="<br>",
        )
        return f'<div style="font-family:monospace;white-space:pre;line-height:1.6">{body}</div>'

    def render(self, color: str = "auto", stream=None) -> str:
        """``color``: ``always``, ``never``, or ``auto`` (ANSI only for a terminal without ``NO_COLOR``)."""
        return self.to_ansi() if use_color(color, stream) else self.to_plain()

    def __str__(self) -> str:
        return self.to_plain()


def use_color(color: str = "auto", stream=None) -> bool:
    if color not in ("auto", "always", "never"):
        raise ScratchMLMError(f"--color must be auto, always or never, got {color!r}.")
    if color != "auto":
        return color == "always"
    stream = stream if stream is not None else sys.stdout
    no_color = os.environ.get("NO_COLOR", "") != ""     # no-color.org: set and not empty
    return not no_color and hasattr(stream, "isatty") and stream.isatty()


def encode_prompt(tokenizer, model, text: str, strict: bool = True) -> torch.Tensor:
    """A prompt as ids ``[len]``: unknown characters, an empty prompt or one longer than the model
    reads are errors that say so."""
    ids = tokenizer.encode(text, strict=strict)
    if len(ids) == 0:
        raise ScratchMLMError("The prompt is empty.")
    if len(ids) > model.max_len:
        raise ScratchMLMError(f"The prompt is {len(ids)} tokens long; this model reads at most "
                              f"{model.max_len}. Shorten it.")
    return ids


@torch.no_grad()
def fill_prompts(model, tokenizer, prompts: list[str], masker: BertMasker, rng: torch.Generator,
                 strict: bool = True) -> Samples:
    """Mask each prompt (a literal ``[MASK]`` stays a mask; a prompt without one is masked by
    ``masker`` with randomness from ``rng``) and let the model predict every selected position.

    A character the vocabulary lacks is an error, or with ``strict=False`` (for lines of a text
    the model did not learn its vocabulary from) an ``[UNK]`` that is never masked."""
    device = next(model.parameters()).device
    filled = []
    with eval_mode(model):
        for text in prompts:
            ids = encode_prompt(tokenizer, model, text, strict)
            user_masks = ids == tokenizer.mask_id
            if bool(user_masks.any()):
                inputs, is_fill = ids, user_masks
                expected = [None if m else tokenizer.pieces[i] for i, m in zip(ids.tolist(), user_masks.tolist())]
            else:
                masked = masker(ids[None], rng)
                inputs, is_fill = masked.inputs[0], masked.selected[0]
                expected = [tokenizer.pieces[i] for i in ids.tolist()]
            logits = model(inputs[None].to(device))[0].float().cpu()                 # [seq, vocab]
            logits[:, list(tokenizer.special_ids)] = float("-inf")                    # answers are real characters
            predicted = [tokenizer.pieces[i] for i in logits.argmax(-1).tolist()]
            shown = [tokenizer.pieces[i] for i in inputs.tolist()]
            filled.append(FilledPrompt(expected, predicted, is_fill.tolist(), shown))
    return Samples(filled)


def validation_prompts(valid_text: str, count: int, length: int, rng: torch.Generator) -> list[str]:
    """``count`` prompts: lines of the validation text (at least 16 characters), cut to ``length``.

    A text without such lines (a word list, short verse) gives windows of ``length`` characters.
    """
    if count < 1:
        raise ScratchMLMError(f"The number of prompts must be at least 1, got {count}.")
    lines = [line[:length] for line in valid_text.split("\n") if len(line.strip()) >= 16]
    if not lines:
        lines = [valid_text[start:start + length] for start in range(0, max(len(valid_text) - length, 0) + 1, length)]
    picks = torch.randint(len(lines), (count,), generator=rng).tolist()
    return [lines[i] for i in picks]


@dataclass
class FillCandidate:
    """One candidate for one ``[MASK]``: its probability, the token, and the text with it filled in
    (other ``[MASK]``s left as they are), like Hugging Face's fill-mask pipeline."""

    score: float
    token: str
    sequence: str
    token_id: int


@dataclass
class MaskPrediction:
    position: int
    candidates: list[FillCandidate]


@torch.no_grad()
def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list[MaskPrediction]:
    """For every ``[MASK]`` in ``text``, the ``top_k`` real characters, most probable first.

    All masks are predicted in one forward pass, each seeing the others as ``[MASK]``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ScratchMLMError(f"--top-k must be an integer of at least 1, got {top_k!r}.")
    ids = encode_prompt(tokenizer, model, text)
    positions = (ids == tokenizer.mask_id).nonzero().flatten().tolist()
    if not positions:
        raise ScratchMLMError('The text has no [MASK] to fill; write e.g. "To be, or not to [MASK]e".')
    device = next(model.parameters()).device
    with eval_mode(model):
        probs = F.softmax(model(ids[None].to(device))[0].float(), dim=-1).cpu()   # [seq, vocab]
    if not bool(torch.isfinite(probs[positions]).all()):
        raise ScratchMLMError("The model's probabilities are not finite (NaN): its weights diverged or are damaged; "
                              "use another checkpoint (--checkpoint) or retrain.")
    probs[:, list(tokenizer.special_ids)] = 0.0   # only real characters are answers
    probs = probs / probs.sum(-1, keepdim=True)
    results = []
    for position in positions:
        values, indices = probs[position].topk(min(top_k, tokenizer.vocab_size - len(tokenizer.special_ids)))
        candidates = []
        for token_id, score in zip(indices.tolist(), values.tolist()):
            filled = ids.clone()
            filled[position] = token_id
            candidates.append(FillCandidate(score, tokenizer.pieces[token_id], tokenizer.decode(filled), token_id))
        results.append(MaskPrediction(position, candidates))
    return results


def fill_mask_records(predictions: list[MaskPrediction], tokenizer) -> list[list[dict]]:
    """Hugging Face fill-mask pipeline records, one list per ``[MASK]`` (even when there is one):
    ``{"score": p, "token": id, "token_str": character, "sequence": filled text}``."""
    return [[{"score": c.score, "token": c.token_id, "token_str": c.token,
              "sequence": c.sequence} for c in prediction.candidates] for prediction in predictions]


def format_fill_mask(text: str, predictions: list[MaskPrediction]) -> str:
    lines = [text]
    for number, prediction in enumerate(predictions, 1):
        options = "  ".join(f"{visible(c.token)} {c.score:.3f}" for c in prediction.candidates)
        lines.append(f"[MASK] #{number} (position {prediction.position}): {options}")
    return "\n".join(lines)
