"""Plausible bugs the checks were NOT written against: the teacher's measure of how the grader does
on wrong code outside its catalogue (not shipped in a student copy).

Each entry is a context manager that swaps a buggy version in for the reference, as in ``mutants``;
none of them has a ``CAUSES`` entry or a frozen output. A check must fail every one of them; the
count of those it *names* (a catalogued cause that fits) or *locates* (a specific property and place,
not the generic line) is reported by

    python -m scratchmlm.classroom.checks.unseen_bugs           # caught / named / located / passed, both sets
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import sys

import torch
import torch.nn.functional as F

from ... import noam as noam_module
from ... import step as step_module
from ...masking import IGNORE_INDEX, NOT_SELECTED, UNCHANGED, BertMasker, MaskedBatch
from ...model import Encoder, EncoderLayer, MultiHeadAttention
from ...noam import NoamScheduler
from . import adapters
from .mutants import MUTANTS, replaced

REFERENCE_MASKER = BertMasker.__call__


# -- Part 2: attention -----------------------------------------------------------------------------

def _attention(self, x, key_padding_mask=None, return_weights=False, *, bug):
    batch, seq, d_model = x.shape
    if bug == "heads_split_without_transpose":      # [batch, seq, 3 d_model] read as [3, batch, heads, seq, d_k]
        q, k, v = self.qkv(x).reshape(batch, 3, self.num_heads, seq, self.d_k).unbind(1)
    else:
        q, k, v = self.qkv(x).view(batch, seq, 3, self.num_heads, self.d_k).permute(2, 0, 3, 1, 4)
    if bug == "values_used_as_keys":
        k = v
    scores = q @ k.transpose(-2, -1)
    if bug != "scaled_after_softmax":
        scores = scores / math.sqrt(self.d_k)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    weights = scores.softmax(-1)
    if bug == "scaled_after_softmax":                # the weights no longer sum to 1
        weights = weights / math.sqrt(self.d_k)
    heads = self.dropout(weights) @ v
    if bug == "batch_and_heads_mixed":               # [batch, heads, seq, d_k] merged through [heads, batch, ...]
        merged = heads.transpose(0, 1).reshape(batch, self.num_heads, seq, self.d_k).transpose(1, 2)
        merged = merged.reshape(batch, seq, d_model)
    else:
        merged = heads.transpose(1, 2).reshape(batch, seq, d_model)
    output = F.linear(merged, self.out.weight) if bug == "output_bias_missing" else self.out(merged)
    return (output, weights) if return_weights else output


def _attention_bug(bug):
    return replaced(MultiHeadAttention, "forward", functools.partialmethod(_attention, bug=bug))


ATTENTION = {name: functools.partial(_attention_bug, name) for name in (
    "heads_split_without_transpose", "values_used_as_keys", "scaled_after_softmax", "batch_and_heads_mixed",
    "output_bias_missing")}


# -- Part 3: encoder -------------------------------------------------------------------------------

def _layer(self, x, key_padding_mask=None, return_weights=False, *, bug):
    mask = key_padding_mask
    if bug == "mask_inverted" and mask is not None:
        mask = ~mask
    norm_a = self.norm1
    norm_b = self.norm1 if bug == "first_norm_used_twice" else self.norm2
    ff = self.feed_forward
    if bug == "relu_instead_of_gelu":
        def ff(h):
            return self.feed_forward.linear2(F.relu(self.feed_forward.linear1(h)))
    if self.norm_first:
        attended = self.attention(norm_a(x), mask)
        x = x + self.dropout1(attended)
        x = x + self.dropout2(ff(norm_b(x)))
    else:
        x = norm_a(x + self.dropout1(self.attention(x, mask)))
        x = norm_b(x + self.dropout2(ff(x)))
    return (x, None) if return_weights else x


def _final_norm_after_every_layer(self, x, key_padding_mask=None, return_weights=False):
    for layer in self.layers:
        x = self.final_norm(layer(x, key_padding_mask))
    return (x, []) if return_weights else x


ENCODER = {
    **{name: functools.partial(lambda bug: replaced(EncoderLayer, "forward",
                                                    functools.partialmethod(_layer, bug=bug)), name)
       for name in ("mask_inverted", "first_norm_used_twice", "relu_instead_of_gelu")},
    "final_norm_after_every_layer": lambda: replaced(Encoder, "forward", _final_norm_after_every_layer),
}


# -- Part 1: masking -------------------------------------------------------------------------------

def _unchanged_not_labelled(self, ids, rng):
    batch = REFERENCE_MASKER(self, ids, rng)
    labels = batch.labels.masked_fill(batch.kinds == UNCHANGED, IGNORE_INDEX)
    return MaskedBatch(batch.inputs, labels, batch.kinds)


def _mask_and_random_swapped(self, ids, rng):
    swapped = BertMasker.__new__(BertMasker)
    swapped.__dict__.update(self.__dict__)
    swapped.mask_token_prob, swapped.random_token_prob = self.random_token_prob, self.mask_token_prob
    return REFERENCE_MASKER(swapped, ids, rng)


def _only_the_first_positions(self, ids, rng, eligible=512):
    batch = REFERENCE_MASKER(self, ids, rng)
    late = torch.arange(ids.shape[-1]) >= eligible
    kinds = batch.kinds.masked_fill(late, NOT_SELECTED)
    inputs = torch.where(late, ids, batch.inputs)
    labels = batch.labels.masked_fill(late, IGNORE_INDEX)
    return MaskedBatch(inputs, labels, kinds)


MASKING = {
    "unchanged_positions_not_labelled": lambda: replaced(BertMasker, "__call__", _unchanged_not_labelled),
    "mask_and_random_probabilities_swapped": lambda: replaced(BertMasker, "__call__", _mask_and_random_swapped),
    "only_the_first_512_positions_eligible": lambda: replaced(BertMasker, "__call__", _only_the_first_positions),
}


# -- Part 4: loss and step -------------------------------------------------------------------------

def _summed_loss(logits, labels):
    selected = labels != IGNORE_INDEX
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, selected.sum()


@contextlib.contextmanager
def _loss(bug):
    with replaced(step_module, "masked_cross_entropy", bug), replaced(adapters, "masked_cross_entropy", bug):
        yield


def _step(model, ids, masker, rng, optimizer, scheduler, clip_norm, *, bug):
    with torch.no_grad():
        masked = masker(ids, rng)
    logits = model(masked.inputs)
    loss, num_scored = step_module.masked_cross_entropy(logits, masked.labels)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0 if bug == "clip_norm_hard_coded" else clip_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    if bug == "lr_read_after_the_scheduler":
        lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        num_correct = ((logits.argmax(-1) == masked.labels) & (masked.labels != IGNORE_INDEX)).sum()
    return step_module.StepResult(loss.detach(), grad_norm.detach(), lr, num_scored, num_correct)


@contextlib.contextmanager
def _step_bug(bug):
    patched = functools.partial(_step, bug=bug)
    with replaced(step_module, "train_step", patched), replaced(adapters, "train_step", patched):
        yield


STEP = {
    "loss_summed_not_averaged": lambda: _loss(_summed_loss),
    "clip_norm_hard_coded": lambda: _step_bug("clip_norm_hard_coded"),
    "lr_read_after_the_scheduler": lambda: _step_bug("lr_read_after_the_scheduler"),
}


# -- Part 5: Noam ----------------------------------------------------------------------------------

def _noam_warmup_exponent(step, d_model, warmup, factor=1.0):
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -0.5)


@contextlib.contextmanager
def _noam_lr(bug):
    with replaced(noam_module, "noam_lr", bug), replaced(adapters, "noam_lr", bug):
        yield


def _get_lr_without_factor(self):
    rate = noam_module.noam_lr(self.last_epoch + 1, self.d_model, self.warmup, 1.0)
    return [rate for _ in self.optimizer.param_groups]


NOAM = {
    "warmup_exponent_minus_half": lambda: _noam_lr(_noam_warmup_exponent),
    "scheduler_ignores_factor": lambda: replaced(NoamScheduler, "get_lr", _get_lr_without_factor),
}

UNSEEN = {"masking": MASKING, "attention": ATTENTION, "encoder": ENCODER, "step": STEP, "noam": NOAM}

# What the old checks said when nothing matched: a cause that names no property and no place.
GENERIC_PREFIXES = ("no known bug reproduces this output",)


def judge(part: str, patch) -> dict:
    """Run ``part``'s check with ``patch`` swapped in: caught (it fails), named (a failed item names a
    catalogued cause of the part), located (every failed item has a specific cause, not the generic line)."""
    from . import PARTS

    causes = set(importlib.import_module(f"scratchmlm.classroom.checks.{part}").CAUSES.values())
    with patch():
        report = PARTS[part]()
    failing = [item for item in report.items if not item.passed]
    caught = not report.passed
    return {"caught": caught,
            "named": caught and any(item.cause in causes for item in failing),
            "located": caught and all(item.cause and not item.cause.startswith(GENERIC_PREFIXES) for item in failing),
            "score": report.score, "points": report.points,
            "causes": sorted({item.cause for item in failing})}


def tally(bugs: dict[str, dict]) -> dict:
    results = {f"{part}/{name}": judge(part, patch) for part, named in bugs.items() for name, patch in named.items()}
    return {"bugs": len(results), "caught": sum(r["caught"] for r in results.values()),
            "named": sum(r["named"] for r in results.values()),
            "located": sum(r["located"] for r in results.values()),
            "passed": sum(not r["caught"] for r in results.values()), "results": results}


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    failed = 0
    for title, bugs in (("catalogue (mutants.py)", MUTANTS), ("unseen (unseen_bugs.py)", UNSEEN)):
        summary = tally(bugs)
        print(f"{title}: {summary['bugs']} bugs, caught {summary['caught']}, named {summary['named']}, "
              f"located {summary['located']}, passed {summary['passed']}")
        for name, result in summary["results"].items():
            mark = "caught" if result["caught"] else "PASSED"
            print(f"  {name}: {mark}, named {result['named']}, located {result['located']}, "
                  f"{result['score']:g}/{result['points']}" + ("" if "-v" not in argv else
                                                                 "\n      " + "\n      ".join(result["causes"])))
        failed += summary["passed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
