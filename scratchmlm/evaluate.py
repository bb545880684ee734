"""Honest evaluation on the frozen validation set, with two baselines scored on the same masks.

Over the selected (masked) positions only:

* top-1 / top-5 accuracy: the true character is the best / among the 5 best predictions;
* cross-entropy: mean of ``-log p(true character)``, in nats; perplexity = ``exp(cross-entropy)``;

overall and per kind ([MASK] / random / unchanged positions). Only the [MASK] kind measures
infilling from context alone: an unchanged position shows the answer, so a model scores well
there by copying.

A diverged model (inf or NaN weights) is scored, not refused: its cross-entropy and perplexity
come out inf or NaN, and ``to_dict`` writes such non-finite numbers as ``null`` so that
``metrics.jsonl`` stays valid JSON (``"loss": null`` with ``"count" > 0`` means "not finite").

Baselines, from add-one smoothed counts over the training split, using only the neighbours the
model also sees (a neighbour that is [MASK] or outside the window is not visible):

* **unigram** predicts ``p(c)``, the character frequencies, everywhere;
* **bigram infill** predicts the character ``c`` between a left neighbour ``a`` and a right
  neighbour ``b`` by Bayes' rule, treating the text as a first-order Markov chain::

      both visible:        p(c | a, b) ∝ p(c | a) · p(b | c)
      only ``a`` visible:  p(c | a)
      only ``b`` visible:  p(c | b)    ∝ p(c) · p(b | c)
      neither visible:     p(c)        (the unigram)

**Pseudo-perplexity** of a text masks each position in turn and scores the model's prediction of it:
``exp(-mean_i log p(x_i | x without x_i))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batches import FrozenValidationSet
from .masking import IGNORE_INDEX, KIND_NAMES, MaskedBatch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``with eval_mode(model): ...`` runs the body with ``model`` in eval mode (dropout off), then
    restores every submodule's previous training flag, even when the body raises."""
    was_training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in was_training.items():
            module.training = training


def _perplexity(loss: float) -> float:
    """``exp(loss)``: inf when it overflows a float, NaN for a NaN loss."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _json_number(value: float | None) -> float | None:
    """``value``, or ``None`` (JSON ``null``) when it is inf or NaN, which JSON cannot hold."""
    return value if value is None or math.isfinite(value) else None


@dataclass
class Scores:
    """Accuracy and cross-entropy over one set of scored positions (``None`` when there are none).

    ``loss`` is inf or NaN for a diverged model; ``to_dict`` writes those as ``None``.
    """

    count: int
    top1: float | None
    top5: float | None
    loss: float | None

    @property
    def perplexity(self) -> float | None:
        """``exp(loss)``; inf when that overflows or the loss is inf, NaN when the loss is NaN."""
        return None if self.loss is None else _perplexity(self.loss)

    def to_dict(self) -> dict:
        """JSON-ready: non-finite numbers become ``None`` (``null``)."""
        return {"count": self.count, "top1": _json_number(self.top1), "top5": _json_number(self.top5),
                "loss": _json_number(self.loss), "perplexity": _json_number(self.perplexity)}


@dataclass
class EvalResult:
    """Overall scores, scores per kind, and the fingerprint of the validation set used."""

    overall: Scores
    by_kind: dict[str, Scores]
    fingerprint: str
    name: str = "model"

    def to_dict(self) -> dict:
        return {**self.overall.to_dict(), "by_kind": {k: v.to_dict() for k, v in self.by_kind.items()},
                "fingerprint": self.fingerprint}

    def summary(self) -> str:
        """One line for the terminal; a diverged model's CE and perplexity print as ``nan`` / ``inf``."""
        kinds = "  ".join(f"{k} {v.top1:.3f}" if v.count else f"{k} -" for k, v in self.by_kind.items())
        return (f"{self.name:>14}: top-1 {self.overall.top1:.3f}  top-5 {self.overall.top5:.3f}  "
                f"CE {self.overall.loss:.3f}  ppl {self.overall.perplexity:.2f}  | top-1 by kind: {kinds}")


def position_scores(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per position, from log-probabilities ``[n, vocab]`` and true ids ``labels`` ``[n]``: the
    negative log-likelihood, and whether the true id is the best and among the 5 best guesses,
    as ``[3, n]`` float64 (``nll, hit1, hit5``)."""
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)               # [n]
    top5 = log_probs.topk(min(5, log_probs.shape[1]), dim=1).indices     # [n, 5]
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(dim=1)
    return torch.stack([nll.double(), hit1.double(), hit5.double()])


def score_log_probs(log_probs: torch.Tensor, labels: torch.Tensor, kinds: torch.Tensor,
                    fingerprint: str, name: str) -> EvalResult:
    """Score log-probabilities ``[n, vocab]`` of the ``n`` selected positions, whose true ids are
    ``labels`` ``[n]`` and whose masking kinds are ``kinds`` ``[n]``."""
    return summarise(position_scores(log_probs, labels), kinds, fingerprint, name)


def summarise(per_position: torch.Tensor, kinds: torch.Tensor, fingerprint: str, name: str) -> EvalResult:
    """Overall and per-kind means of ``position_scores`` ``[3, n]`` of positions of ``kinds`` ``[n]``."""
    nll, hit1, hit5 = per_position[0], per_position[1].bool(), per_position[2].bool()

    def scores(where: torch.Tensor) -> Scores:
        n = int(where.sum())
        if n == 0:
            return Scores(0, None, None, None)
        return Scores(n, hit1[where].float().mean().item(), hit5[where].float().mean().item(),
                      nll[where].double().mean().item())

    by_kind = {kind_name: scores(kinds == kind) for kind, kind_name in KIND_NAMES.items()}
    return EvalResult(scores(torch.ones_like(kinds, dtype=torch.bool)), by_kind, fingerprint, name)


def _selected(batch: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The selected positions of a batch: (flat indices into [batch * seq], labels, kinds)."""
    selected = (batch.labels != IGNORE_INDEX).flatten()
    return selected.nonzero().squeeze(1), batch.labels.flatten()[selected], batch.kinds.flatten()[selected]


@torch.no_grad()
def evaluate(model: torch.nn.Module, valid: FrozenValidationSet, batch_size: int = 256) -> EvalResult:
    """The model's scores on the frozen validation set (eval mode; training mode is restored)."""
    device = next(model.parameters()).device
    batch = valid.batch.to("cpu")
    per_position = []
    with eval_mode(model):
        for start in range(0, len(valid), batch_size):
            rows = slice(start, start + batch_size)
            logits = model(valid.batch.inputs[rows].to(device)).float().cpu()      # [rows, seq, vocab]
            selected = batch.labels[rows] != IGNORE_INDEX
            log_probs = F.log_softmax(logits[selected], dim=-1)                    # [n_rows, vocab]
            per_position.append(position_scores(log_probs, batch.labels[rows][selected]))
    _, _, kinds = _selected(batch)
    return summarise(torch.cat(per_position, dim=1), kinds, valid.fingerprint, "model")


def unigram_log_probs(train_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Add-one smoothed log-frequencies ``[vocab]`` of the training ids."""
    counts = torch.bincount(train_ids.cpu(), minlength=vocab_size).double() + 1.0
    return (counts / counts.sum()).log()


def bigram_log_table(train_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``table[a, b] = log p(next = b | current = a)`` with add-one smoothing, ``[vocab, vocab]``."""
    ids = train_ids.cpu()
    pairs = ids[:-1] * vocab_size + ids[1:]
    counts = torch.bincount(pairs, minlength=vocab_size * vocab_size).double().view(vocab_size, vocab_size) + 1.0
    return (counts / counts.sum(dim=1, keepdim=True)).log()


SCORING_CHUNK = 1024    # positions scored at once by the baselines: [1024, vocab] float64 at most


def unigram_baseline(train_ids: torch.Tensor, valid: FrozenValidationSet, vocab_size: int) -> EvalResult:
    _, labels, kinds = _selected(valid.batch.to("cpu"))
    unigram = unigram_log_probs(train_ids, vocab_size)
    per_position = [position_scores(unigram.expand(len(chunk), vocab_size), chunk)
                    for chunk in labels.split(SCORING_CHUNK)]
    return summarise(torch.cat(per_position, dim=1), kinds, valid.fingerprint, "unigram")


def bigram_counts(train_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``counts[a, b]`` = how often ``b`` follows ``a`` in the training ids, as a sparse ``[vocab,
    vocab]`` tensor: only the pairs that occur are stored (a subword vocabulary of 8000 would
    need 512 MB as a dense float64 table; its text holds a few hundred thousand distinct pairs)."""
    ids = train_ids.cpu()
    pairs, counts = torch.unique(ids[:-1] * vocab_size + ids[1:], return_counts=True)
    with torch.sparse.check_sparse_tensor_invariants():     # checked, and no warning that they are not
        return torch.sparse_coo_tensor(torch.stack([pairs // vocab_size, pairs % vocab_size]), counts.double(),
                                       (vocab_size, vocab_size)).coalesce()


def bigram_infill_baseline(train_ids: torch.Tensor, valid: FrozenValidationSet, vocab_size: int,
                           mask_id: int) -> EvalResult:
    """Score ``p(c | left, right) ∝ p(c | left) · p(right | c)`` at every selected position, with
    ``p(c)`` in place of ``p(c | left)`` where the left neighbour is not visible and the factor
    ``p(right | c)`` left out where the right one is not (see the module docstring).

    With add-one smoothing, ``log p(b | a) = log(counts[a, b] + 1) - log(row_total[a] + vocab)``;
    the rows and columns needed are read from the sparse counts, ``SCORING_CHUNK`` positions at a
    time, so memory stays ``[chunk, vocab]`` whatever the vocabulary."""
    batch = valid.batch.to("cpu")
    flat, labels, kinds = _selected(batch)
    seq_len = batch.inputs.shape[1]
    inputs = batch.inputs.flatten()
    counts = bigram_counts(train_ids, vocab_size)                        # sparse [vocab, vocab]
    counts_by_next = counts.t().coalesce()                               # counts_by_next[b, c] = counts[c, b]
    log_row_total = (counts.sum(dim=1).to_dense() + vocab_size).log()    # [vocab]
    unigram = unigram_log_probs(train_ids, vocab_size)                   # [vocab]
    per_position = []
    for positions, chunk_labels in zip(flat.split(SCORING_CHUNK), labels.split(SCORING_CHUNK)):
        column = positions % seq_len
        # the prior over c: log p(c), replaced by log p(c | a) where the left neighbour a is visible
        left = inputs[(positions - 1).clamp(min=0)]
        use_left = (column > 0) & (left != mask_id)
        after_left = (counts.index_select(0, left).to_dense() + 1).log() - log_row_total[left][:, None]
        scores = torch.where(use_left[:, None], after_left, unigram)                  # [chunk, vocab]
        # the likelihood of a visible right neighbour b: log p(b | c) as a function of c
        right = inputs[(positions + 1).clamp(max=len(inputs) - 1)]
        use_right = (column < seq_len - 1) & (right != mask_id)
        before_right = (counts_by_next.index_select(0, right).to_dense() + 1).log() - log_row_total
        scores = scores + torch.where(use_right[:, None], before_right, 0.0)
        per_position.append(position_scores(scores.log_softmax(-1), chunk_labels))
    return summarise(torch.cat(per_position, dim=1), kinds, valid.fingerprint, "bigram infill")


@torch.no_grad()
def pseudo_perplexity(model: torch.nn.Module, ids: torch.Tensor, mask_id: int, window: int,
                      batch_size: int = 256) -> float:
    """Pseudo-perplexity of the 1-D ``ids``: mask each position in turn, within a window of up to
    ``window`` tokens centred on it, and average ``-log p(true id)``. A diverged model gives inf or
    NaN."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    n = len(ids)
    width = min(window, n)
    positions = torch.arange(n, device=device)
    starts = (positions - width // 2).clamp(0, n - width)              # [n]
    windows = ids[starts[:, None] + torch.arange(width, device=device)]  # [n, width]
    offsets = positions - starts                                        # where the masked one sits
    windows[torch.arange(n, device=device), offsets] = mask_id
    total = 0.0
    with eval_mode(model):
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            log_probs = F.log_softmax(model(windows[rows]).float(), dim=-1)
            picked = log_probs[torch.arange(log_probs.shape[0], device=device), offsets[rows], ids[rows]]
            total += -picked.double().sum().item()
    return _perplexity(total / n)
