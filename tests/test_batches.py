import torch

from scratchmlm import BertMasker, FrozenValidationSet, random_windows
from scratchmlm.batches import evenly_spaced_windows


def test_random_windows_are_contiguous_slices(corpus_ids):
    generator = torch.Generator().manual_seed(0)
    batch = random_windows(corpus_ids, 64, 32, generator)
    assert batch.shape == (64, 32) and batch.dtype == torch.int64
    every_window = corpus_ids.unfold(0, 32, 1)                    # [len - 31, 32]: each contiguous slice
    for row in batch:
        same_start = every_window[every_window[:, 0] == row[0]]
        assert (same_start == row).all(-1).any(), row


def test_random_windows_are_reproducible_and_cover_the_ends():
    tokens = torch.arange(100)
    a = random_windows(tokens, 16, 10, torch.Generator().manual_seed(1))
    b = random_windows(tokens, 16, 10, torch.Generator().manual_seed(1))
    c = random_windows(tokens, 16, 10, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    starts = random_windows(tokens, 5000, 10, torch.Generator().manual_seed(3))[:, 0]
    assert int(starts.min()) == 0 and int(starts.max()) == 90


def test_evenly_spaced_windows_do_not_overlap():
    tokens = torch.arange(1000)
    windows = evenly_spaced_windows(tokens, 20, 32)
    assert windows.shape == (20, 32)
    starts = windows[:, 0]
    assert torch.all(starts[1:] - starts[:-1] >= 32) and int(windows.max()) < 1000
    assert evenly_spaced_windows(tokens, 10_000, 32).shape == (31, 32)


def test_frozen_validation_set_is_fixed_and_fingerprinted(corpus_text, tokenizer):
    valid = tokenizer.encode(corpus_text[int(0.9 * len(corpus_text)):], parse_special=False)
    masker = BertMasker.for_tokenizer(tokenizer)
    first = FrozenValidationSet.build(valid, masker, seq_len=32)
    second = FrozenValidationSet.build(valid, masker, seq_len=32)
    other_seed = FrozenValidationSet.build(valid, masker, seq_len=32, seed=99)
    assert len(first) == 1024 and first.batch.inputs.shape == (1024, 32)
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 64
    assert other_seed.fingerprint != first.fingerprint
    assert torch.equal(first.batch.labels[first.batch.selected], first.originals[first.batch.selected])
