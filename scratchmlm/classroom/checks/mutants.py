"""Known bugs, written out: the teacher's catalogue (not shipped in a student copy).

Each part maps a bug's name (the key of its ``CAUSES`` in the part's check module) to a context
manager that swaps the buggy version in for the reference one. ``make_snapshots`` runs every check
input under each of them to freeze the outputs a bug produces; the tests swap each in and assert
that its part's check names it and every other part still passes.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from ... import noam as noam_module
from ... import step as step_module
from ...masking import IGNORE_INDEX, MASKED, RANDOMISED, UNCHANGED, BertMasker, MaskedBatch
from ...model import Encoder, EncoderLayer, MultiHeadAttention
from ...noam import NoamScheduler
from . import adapters


@contextlib.contextmanager
def replaced(owner, name: str, replacement):
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


# -- Part 2: attention -----------------------------------------------------------------------------

def _attention(self, x, key_padding_mask=None, return_weights=False, *, softmax_dim=-1, mask="before",
               scale="sqrt_d_k", transpose=True, causal=False, dropout_in_eval=False, weights_before_mask=False,
               cut_queries_and_keys=False):
    batch, seq, d_model = x.shape
    q, k, v = self.qkv(x).view(batch, seq, 3, self.num_heads, self.d_k).permute(2, 0, 3, 1, 4)
    if cut_queries_and_keys:                     # the output is right, but W_q and W_k get no gradient
        q, k = q.detach(), k.detach()
    divisor = {"sqrt_d_k": math.sqrt(self.d_k), "none": 1.0, "d_k": self.d_k,
               "sqrt_d_model": math.sqrt(d_model)}[scale]
    scores = q @ k.transpose(-2, -1) / divisor
    if causal:
        scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    padding = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    if padding is not None and mask == "before":
        scores = scores.masked_fill(padding, torch.finfo(scores.dtype).min)
    if padding is not None and mask == "zero":
        scores = scores.masked_fill(padding, 0.0)
    if key_padding_mask is not None and mask == "queries":      # rows (queries) masked, not columns (keys)
        scores = scores.masked_fill(key_padding_mask[:, None, :, None], torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=softmax_dim)
    if padding is not None and mask == "after":
        weights = weights.masked_fill(padding, 0.0)
    dropped = (torch.nn.functional.dropout(weights, self.dropout_p, training=True) if dropout_in_eval
               else self.dropout(weights))
    heads = dropped @ v
    merged = (heads.transpose(1, 2) if transpose else heads).reshape(batch, seq, d_model)
    output = self.out(merged)
    if weights_before_mask:                      # the weights returned are not the ones that were used
        weights = (q @ k.transpose(-2, -1) / divisor).softmax(dim=-1)
    return (output, weights) if return_weights else output


def _attention_bug(**options):
    return replaced(MultiHeadAttention, "forward", functools.partialmethod(_attention, **options))


ATTENTION = {
    "softmax_over_queries": lambda: _attention_bug(softmax_dim=-2),
    "mask_after_softmax": lambda: _attention_bug(mask="after"),
    "mask_filled_with_zero": lambda: _attention_bug(mask="zero"),
    "mask_not_applied": lambda: _attention_bug(mask="none"),
    "no_scaling": lambda: _attention_bug(scale="none"),
    "scaled_by_d_k": lambda: _attention_bug(scale="d_k"),
    "scaled_by_sqrt_d_model": lambda: _attention_bug(scale="sqrt_d_model"),
    "heads_merged_without_transpose": lambda: _attention_bug(transpose=False),
    "causal_mask": lambda: _attention_bug(causal=True),
    "mask_on_queries": lambda: _attention_bug(mask="queries"),
    "dropout_in_eval": lambda: _attention_bug(dropout_in_eval=True),
    "weights_returned_before_masking": lambda: _attention_bug(weights_before_mask=True),
    "projection_cut_from_graph": lambda: _attention_bug(cut_queries_and_keys=True),
}

# -- Part 1: masking -------------------------------------------------------------------------------

def _masker(self, ids, rng, *, kinds_drawn="one_draw", replacements="real", labels_at="selected",
            in_place=False, count="binomial", use_rng=True, skip_specials=True, hard_coded=False):
    """``BertMasker.__call__`` written out from the reference, with one bug switched on at a time."""
    device = ids.device
    generator = rng if use_rng else None                     # None: torch's global RNG
    select_p, mask_p, random_p = ((0.15, 0.8, 0.1) if hard_coded else
                                  (self.select_prob, self.mask_token_prob, self.random_token_prob))
    if skip_specials:
        maskable = ~torch.isin(ids, self.never_select_ids.to(device))
    else:
        maskable = torch.ones(ids.shape, dtype=torch.bool, device=device)
    if count == "binomial":
        selected = (torch.rand(ids.shape, generator=generator, device=device) < select_p) & maskable
    elif count == "broadcast":   # one row of draws shared by the whole batch
        selected = (torch.rand(ids.shape[-1], generator=generator, device=device) < select_p) & maskable
    elif count == "grows_along_row":   # the rate rises from 0 to 2p along the row: p on average
        position = (torch.arange(ids.shape[-1], device=device) + 0.5) / ids.shape[-1]
        selected = (torch.rand(ids.shape, generator=generator, device=device) < 2 * select_p * position) & maskable
    else:   # "fixed": exactly round(p * maskable) positions in every row, chosen at random
        scores = torch.rand(ids.shape, generator=generator, device=device).masked_fill(~maskable, 2.0)
        per_row = (maskable.sum(-1, keepdim=True) * select_p).round().long()
        selected = (scores.argsort(-1).argsort(-1) < per_row) & maskable
    if kinds_drawn == "one_draw":
        kind_draw = torch.rand(ids.shape, generator=generator, device=device)
        to_mask = selected & (kind_draw < mask_p)
        to_randomise = selected & ~to_mask & (kind_draw < mask_p + random_p)
        unchanged = selected & ~to_mask & ~to_randomise
    else:   # "independent": random and unchanged drawn separately; they overlap, random wins (81/10/9)
        keep = torch.rand(ids.shape, generator=generator, device=device) < 1.0 - mask_p - random_p
        swap = torch.rand(ids.shape, generator=generator, device=device) < random_p
        to_randomise = selected & swap
        unchanged = selected & keep & ~to_randomise
        to_mask = selected & ~to_randomise & ~unchanged

    pool = self.replacement_ids.to(device)
    if replacements == "real":
        random_tokens = pool[torch.randint(len(pool), ids.shape, generator=generator, device=device)]
    elif replacements == "whole_vocabulary":   # randint(vocab_size): specials come out too
        random_tokens = torch.randint(int(pool.max()) + 1, ids.shape, generator=generator, device=device)
    else:   # "off_by_one": the last real id is never drawn
        random_tokens = pool[torch.randint(len(pool) - 1, ids.shape, generator=generator, device=device)]
    random_tokens = random_tokens.to(ids.dtype)

    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX)).long()
    if labels_at == "everywhere":
        labels = ids.clone().long()
    if in_place:        # inputs = ids; inputs[...] = ...: the caller's tensor is overwritten
        inputs = ids
        inputs[to_mask] = self.mask_id
        inputs[to_randomise] = random_tokens[to_randomise]
    else:
        inputs = torch.where(to_mask, torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(to_randomise, random_tokens, inputs)
    if labels_at == "inputs":
        labels = torch.where(selected, inputs, torch.full_like(inputs, IGNORE_INDEX)).long()
    kinds = (to_mask * MASKED + to_randomise * RANDOMISED + unchanged * UNCHANGED).to(torch.uint8)
    return MaskedBatch(inputs=inputs, labels=labels, kinds=kinds)


def _masker_bug(**options):
    return replaced(BertMasker, "__call__", functools.partialmethod(_masker, **options))


MASKING = {
    "independent_draws": lambda: _masker_bug(kinds_drawn="independent"),
    "special_ids_inserted": lambda: _masker_bug(replacements="whole_vocabulary"),
    "labels_kept_at_unselected": lambda: _masker_bug(labels_at="everywhere"),
    "input_modified_in_place": lambda: _masker_bug(in_place=True),
    "selection_shared_across_rows": lambda: _masker_bug(count="broadcast"),
    "selection_depends_on_position": lambda: _masker_bug(count="grows_along_row"),
    "generator_ignored": lambda: _masker_bug(use_rng=False),
    "specials_selected": lambda: _masker_bug(skip_specials=False),
    "replacements_miss_last_id": lambda: _masker_bug(replacements="off_by_one"),
    "labels_are_masked_inputs": lambda: _masker_bug(labels_at="inputs"),
    "probabilities_hard_coded": lambda: _masker_bug(hard_coded=True),
}


# -- Part 3: encoder layer -------------------------------------------------------------------------

def _encoder_layer(self, x, key_padding_mask=None, return_weights=False, *, placement="asked",
                   attention_residual=True, feed_forward_residual=True, dropout_in_eval=False,
                   mask_to_attention=True, attention_detached=False):
    norm_first = {"asked": self.norm_first, "pre": True, "post": False}[placement]

    def drop(t, module):
        if not dropout_in_eval or module.p == 0:
            return module(t)
        keep = torch.rand(t.shape, dtype=t.dtype) >= module.p       # training-mode dropout, eval or not
        return t * keep / (1 - module.p)

    attended = self.attention(self.norm1(x) if norm_first else x,
                              key_padding_mask if mask_to_attention else None, return_weights=return_weights)
    weights = None
    if return_weights:
        attended, weights = attended
    if attention_detached:                       # the value is right; the attention never gets a gradient
        attended = attended.detach()
    if norm_first:
        x = (x if attention_residual else 0) + drop(attended, self.dropout1)
        x = (x if feed_forward_residual else 0) + drop(self.feed_forward(self.norm2(x)), self.dropout2)
    else:
        x = self.norm1((x if attention_residual else 0) + drop(attended, self.dropout1))
        x = self.norm2((x if feed_forward_residual else 0) + drop(self.feed_forward(x), self.dropout2))
    return (x, weights) if return_weights else x


def _encoder_layer_bug(**options):
    return replaced(EncoderLayer, "forward", functools.partialmethod(_encoder_layer, **options))


def _encoder(self, x, key_padding_mask=None, return_weights=False, *, final_norm=True, mask_to="all",
             dropout_in_eval=False):
    all_weights = []
    for i, layer in enumerate(self.layers):
        if dropout_in_eval:                      # dropout between the layers, on whatever the mode
            x = torch.nn.functional.dropout(x, layer.dropout1.p, training=True)
        mask = key_padding_mask if mask_to == "all" or i == 0 else None
        if return_weights:
            x, weights = layer(x, mask, return_weights=True)
            all_weights.append(weights)
        else:
            x = layer(x, mask)
    if final_norm:
        x = self.final_norm(x)
    return (x, all_weights) if return_weights else x


def _encoder_bug(**options):
    return replaced(Encoder, "forward", functools.partialmethod(_encoder, **options))


ENCODER = {
    "post_norm_when_pre_norm_asked": lambda: _encoder_layer_bug(placement="post"),
    "pre_norm_when_post_norm_asked": lambda: _encoder_layer_bug(placement="pre"),
    "missing_attention_residual": lambda: _encoder_layer_bug(attention_residual=False),
    "missing_feed_forward_residual": lambda: _encoder_layer_bug(feed_forward_residual=False),
    "missing_final_norm": lambda: _encoder_bug(final_norm=False),
    "dropout_active_in_eval": lambda: _encoder_layer_bug(dropout_in_eval=True),
    "stack_dropout_in_eval": lambda: _encoder_bug(dropout_in_eval=True),
    "mask_not_passed_to_attention": lambda: _encoder_layer_bug(mask_to_attention=False),
    "mask_not_passed_down_the_stack": lambda: _encoder_bug(mask_to="first_layer"),
    "attention_cut_from_graph": lambda: _encoder_layer_bug(attention_detached=True),
}


# -- Part 4: loss and step -------------------------------------------------------------------------

def _masked_cross_entropy(logits, labels, *, unselected="ignored", divisor="count"):
    selected = labels != IGNORE_INDEX
    count = selected.sum()
    # clamp: gather needs a valid index where the label is -100
    nll = -logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    if unselected == "ignored":
        nll = torch.where(selected, nll, torch.zeros_like(nll))
    elif unselected == "zeroed_without_gradient":
        with torch.no_grad():                        # the value is masked, autograd never sees it
            nll[~selected] = 0.0
    # unselected == "kept": every position is scored
    divisor = count.clamp(min=1) if divisor == "count" else labels.numel()
    return nll.sum() / divisor, count


@contextlib.contextmanager
def _loss_bug(**options):
    # train_step calls scratchmlm.step.masked_cross_entropy, the adapter its own imported name: swap both
    bug = functools.partial(_masked_cross_entropy, **options)
    with replaced(step_module, "masked_cross_entropy", bug), replaced(adapters, "masked_cross_entropy", bug):
        yield


def _train_step(model, ids, masker, rng, optimizer, scheduler, clip_norm, *, clip="before_step",
                schedule="after_step", zero_grad=True, optimizer_step=True, zero_grad_first=False):
    if zero_grad_first:                          # a correct variant: clear the gradients at the start instead
        optimizer.zero_grad(set_to_none=True)
        zero_grad = False
    with torch.no_grad():
        masked = masker(ids, rng)
    logits = model(masked.inputs)
    loss, num_scored = step_module.masked_cross_entropy(logits, masked.labels)
    loss.backward()
    if clip == "before_step":
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    if schedule == "before_step":
        scheduler.step()
    lr = optimizer.param_groups[0]["lr"]
    if optimizer_step:
        optimizer.step()
    if clip == "after_step":
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    if schedule in ("after_step", "twice"):
        scheduler.step()
    if schedule == "twice":
        scheduler.step()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        num_correct = ((logits.argmax(-1) == masked.labels) & (masked.labels != IGNORE_INDEX)).sum()
    return step_module.StepResult(loss.detach(), grad_norm.detach(), lr, num_scored, num_correct)


@contextlib.contextmanager
def _train_step_bug(**options):
    bug = functools.partial(_train_step, **options)
    with replaced(step_module, "train_step", bug), replaced(adapters, "train_step", bug):
        yield


STEP = {
    "loss_over_all_positions": lambda: _loss_bug(unselected="kept"),
    "mean_over_all_positions": lambda: _loss_bug(divisor="all_positions"),
    "gradient_at_unselected_positions": lambda: _loss_bug(unselected="zeroed_without_gradient"),
    "clipping_after_optimizer_step": lambda: _train_step_bug(clip="after_step"),
    "scheduler_stepped_before_optimizer": lambda: _train_step_bug(schedule="before_step"),
    "scheduler_stepped_twice": lambda: _train_step_bug(schedule="twice"),
    "gradients_accumulate": lambda: _train_step_bug(zero_grad=False),
    "cannot_overfit_one_batch": lambda: _train_step_bug(optimizer_step=False),
}


# -- Part 5: Noam ----------------------------------------------------------------------------------

def _noam_lr(step, d_model, warmup, factor=1.0, *, shift=0, d_model_scale=True):
    step = step + shift
    if step <= 0:
        return 0.0
    return factor * (d_model ** -0.5 if d_model_scale else 1.0) * min(step ** -0.5, step * warmup ** -1.5)


@contextlib.contextmanager
def _noam_lr_bug(**options):
    # the scheduler calls scratchmlm.noam.noam_lr, the adapter its own imported name: swap both
    bug = functools.partial(_noam_lr, **options)
    with replaced(noam_module, "noam_lr", bug), replaced(adapters, "noam_lr", bug):
        yield


def _noam_get_lr(self, *, offset=1, times_base_lr=False):
    rate = noam_module.noam_lr(self.last_epoch + offset, self.d_model, self.warmup, self.factor)
    return [rate * base if times_base_lr else rate for base in self.base_lrs]


def _noam_scheduler_bug(**options):
    return replaced(NoamScheduler, "get_lr", functools.partialmethod(_noam_get_lr, **options))


NOAM = {
    "step_zero_used_first": lambda: _noam_scheduler_bug(offset=0),
    "scheduler_one_step_ahead": lambda: _noam_scheduler_bug(offset=2),
    "table_shifted_ahead": lambda: _noam_lr_bug(shift=1),
    "table_shifted_back": lambda: _noam_lr_bug(shift=-1),
    "d_model_scale_missing": lambda: _noam_lr_bug(d_model_scale=False),
    "scaled_by_optimizer_lr": lambda: _noam_scheduler_bug(times_base_lr=True),
}


# Bugs that give the reference outputs on every frozen snapshot input and show only in a property on
# fresh inputs (eval mode, padding through a live layer, return_weights, gradients): make_snapshots
# stores no outputs for them and does not require them to change one.
PROPERTY_ONLY = {
    "attention": {"dropout_in_eval", "weights_returned_before_masking", "projection_cut_from_graph"},
    "encoder": {"stack_dropout_in_eval", "mask_not_passed_to_attention", "mask_not_passed_down_the_stack",
                "attention_cut_from_graph"},
}

# Correct variants a check must accept (each its own context manager, like a bug). Google's BERT
# selects a fixed count per sequence, round(0.15 * n_maskable): accepted under the default selection
# rule ("either"); only check_masking(selection="independent") fails it, naming fixed_count_per_row.
def _guarded_mean_cross_entropy(logits, labels):
    """A correct variant: torch's mean cross-entropy, with the empty selection handled before it."""
    count = (labels != IGNORE_INDEX).sum()
    if int(count) == 0:
        return torch.zeros((), dtype=logits.dtype), count
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX), count


@contextlib.contextmanager
def _loss_variant(loss):
    with replaced(step_module, "masked_cross_entropy", loss), replaced(adapters, "masked_cross_entropy", loss):
        yield


VARIANTS = {
    "masking": {"fixed_count_per_row": lambda: _masker_bug(count="fixed")},
    "step": {"zero_grad_at_the_start": lambda: _train_step_bug(zero_grad_first=True),
             "guarded_mean_cross_entropy": lambda: _loss_variant(_guarded_mean_cross_entropy)},
}

MUTANTS = {"masking": MASKING, "attention": ATTENTION, "encoder": ENCODER, "step": STEP, "noam": NOAM}
