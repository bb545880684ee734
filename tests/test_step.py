"""The masked loss and the training step (Part 4), on a small model: the loss scores only the selected
positions, the gradient is zero everywhere else, clipping and the schedule act once per step, and one
fixed batch can be learnt by heart."""

import pytest
import torch

from scratchmlm import BertMasker, CharTokenizer, NoamScheduler, TransformerMLM, noam_lr
from scratchmlm.step import masked_cross_entropy, train_step

pytestmark = pytest.mark.step


@pytest.fixture
def one_thread():
    """Torch on one CPU thread: the tensors here are tiny, and on two cores shared with other work a
    second thread costs more than it saves (the overfitting test: 2 s on one thread, 12 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_loss_ignores_unselected_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 10, requires_grad=True)
    labels = torch.full((2, 8), -100)
    labels[0, 3], labels[1, 5] = 4, 7
    loss, count = masked_cross_entropy(logits, labels)
    changed = logits.detach().clone()
    changed[labels == -100] = torch.randn(14, 10) * 100
    assert torch.equal(masked_cross_entropy(changed, labels)[0], loss.detach())
    expected = (torch.nn.functional.cross_entropy(logits[0, 3][None], torch.tensor([4]))
                + torch.nn.functional.cross_entropy(logits[1, 5][None], torch.tensor([7]))) / 2
    torch.testing.assert_close(loss, expected)
    assert int(count) == 2
    loss.backward()
    assert torch.all(logits.grad[labels == -100] == 0)
    nothing = masked_cross_entropy(logits, torch.full((2, 8), -100))[0]
    assert nothing.item() == 0.0


def _step_parts(clip_norm=1.0, warmup=5):
    tokenizer = CharTokenizer("abcdefgh")
    torch.manual_seed(0)
    model = TransformerMLM(tokenizer.vocab_size, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=8)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = NoamScheduler(optimizer, 16, warmup)
    masker = BertMasker.for_tokenizer(tokenizer)
    ids = torch.randint(3, tokenizer.vocab_size, (8, 8), generator=torch.Generator().manual_seed(1))
    return model, optimizer, scheduler, masker, ids


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_clipping_bounds_the_norm_and_scheduler_advances_once_per_step(monkeypatch):
    model, optimizer, scheduler, masker, ids = _step_parts()
    seen_norms = []
    original_step = optimizer.step

    def spy_step(*args, **kwargs):
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        seen_norms.append(torch.stack(grads).norm().item())
        return original_step(*args, **kwargs)

    monkeypatch.setattr(optimizer, "step", spy_step)
    generator = torch.Generator().manual_seed(2)
    for step in range(1, 6):
        result = train_step(model, ids, masker, generator, optimizer, scheduler, clip_norm=1e-3)
        assert result.lr == pytest.approx(noam_lr(step, 16, 5))
        assert scheduler.last_epoch == step
        assert result.grad_norm.item() > 1e-3          # the reported norm is the one before clipping
        assert seen_norms[-1] <= 1e-3 * (1 + 1e-4)     # the optimizer saw the clipped gradient
        assert all(p.grad is None for p in model.parameters())
    assert len(seen_norms) == 5


def test_overfits_one_fixed_batch(corpus_ids, tokenizer, one_thread):
    """The classic sanity check: one fixed masked batch, learnt to > 99% accuracy within 150 steps
    (a correct step gets there by step 50; 150 leaves room)."""
    torch.manual_seed(0)
    model = TransformerMLM(tokenizer.vocab_size, d_model=32, num_heads=4, num_layers=2, d_ff=64,
                           max_len=32, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.9, 0.98), eps=1e-9)
    scheduler = NoamScheduler(optimizer, d_model=32, warmup=50, factor=1.0)
    masker = BertMasker.for_tokenizer(tokenizer)
    ids = corpus_ids[:16 * 32].view(16, 32)
    for _ in range(150):   # the same generator seed every step: the same masks every step
        result = train_step(model, ids, masker, torch.Generator().manual_seed(0), optimizer, scheduler, 1.0)
    batch = masker(ids, torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        predicted = model(batch.inputs).argmax(-1)
    accuracy = (predicted == batch.labels)[batch.selected].float().mean().item()
    assert int(batch.selected.sum()) > 60
    assert accuracy > 0.99, accuracy
    assert result.loss.item() < 0.1


def test_train_step_gives_no_gradient_at_unselected_positions():
    """dL/dlogits is exactly zero where the masker did not select, and non-zero where it did.

    A step that scored ``ids`` instead of ``masked.labels`` (loss on every position) fails here.
    """
    model, optimizer, scheduler, masker, ids = _step_parts()
    seen = {}

    def keep_logits_gradient(module, inputs, logits):
        logits.register_hook(lambda grad: seen.__setitem__("grad", grad.detach().clone()))

    model.register_forward_hook(keep_logits_gradient)
    train_step(model, ids, masker, torch.Generator().manual_seed(5), optimizer, scheduler, clip_norm=1.0)
    selected = masker(ids, torch.Generator().manual_seed(5)).selected     # the same draws again
    assert 0 < int(selected.sum()) < selected.numel()
    grad = seen["grad"]                                                    # [batch, seq, vocab]
    assert torch.all(grad[~selected] == 0)
    assert torch.all(grad[selected].abs().sum(-1) > 0)
