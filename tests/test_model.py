import math

import pytest
import torch
import torch.nn.functional as F

from scratchmlm import (Embeddings, Encoder, EncoderLayer, FeedForward, Generator,
                        MultiHeadAttention, TransformerMLM)
from scratchmlm.model import sinusoidal_positions


def tiny_model(**overrides):
    settings = dict(vocab_size=11, d_model=8, num_heads=2, num_layers=2, d_ff=16, max_len=6, dropout=0.0)
    settings.update(overrides)
    return TransformerMLM(**settings)


@pytest.mark.attention
@pytest.mark.encoder
def test_shapes_of_every_component():
    torch.manual_seed(0)
    ids = torch.randint(0, 68, (3, 32))
    x = torch.randn(3, 32, 128)
    assert Embeddings(68, 128, 32)(ids).shape == (3, 32, 128)
    assert MultiHeadAttention(128, 8)(x).shape == (3, 32, 128)
    out, weights = MultiHeadAttention(128, 8)(x, return_weights=True)
    assert weights.shape == (3, 8, 32, 32)
    assert FeedForward(128, 256)(x).shape == (3, 32, 128)
    assert EncoderLayer(128, 8, 256)(x).shape == (3, 32, 128)
    hidden, all_weights = Encoder(6, 128, 8, 256)(x, return_weights=True)
    assert hidden.shape == (3, 32, 128) and len(all_weights) == 6
    assert Generator(128, 68)(x).shape == (3, 32, 68)
    model = TransformerMLM(68)
    logits, attention = model(ids, return_attention=True)
    assert logits.shape == (3, 32, 68) and attention[0].shape == (3, 8, 32, 32)


@pytest.mark.attention
def test_attention_rows_sum_to_one_and_padded_keys_get_zero_weight():
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4, dropout=0.0)
    x = torch.randn(2, 7, 16)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[0, 5:] = True
    padding[1, 2] = True
    _, weights = attention(x, key_padding_mask=padding, return_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))
    assert torch.all(weights[0, :, :, 5:] == 0) and torch.all(weights[1, :, :, 2] == 0)
    assert torch.all(weights[0, :, :, :5] > 0)


@pytest.mark.attention
@pytest.mark.parametrize("with_padding", [False, True])
def test_attention_equals_scaled_dot_product_attention_in_float64(with_padding):
    torch.manual_seed(0)
    attention = MultiHeadAttention(32, 4, dropout=0.0).double()
    x = torch.randn(3, 9, 32, dtype=torch.float64)
    padding = torch.zeros(3, 9, dtype=torch.bool)
    if with_padding:
        padding[0, 6:] = True
        padding[2, :2] = True
    ours = attention(x, key_padding_mask=padding)
    # the same projections, with torch's reference attention in the middle
    q, k, v = attention.qkv(x).view(3, 9, 3, 4, 8).permute(2, 0, 3, 1, 4)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
    reference = attention.out(reference.transpose(1, 2).reshape(3, 9, 32))
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    attention.fused = True
    torch.testing.assert_close(attention(x, key_padding_mask=padding), ours, atol=1e-6, rtol=0)


@pytest.mark.attention
def test_written_out_attention_by_hand_for_one_head():
    """softmax(QK^T / sqrt(d_k)) V, computed with explicit loops over one head."""
    torch.manual_seed(1)
    attention = MultiHeadAttention(4, 1, dropout=0.0).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64)
    _, weights = attention(x, return_weights=True)
    q, k, _ = attention.qkv(x)[0].split(4, dim=-1)
    for i in range(3):
        scores = torch.stack([q[i] @ k[j] / math.sqrt(4) for j in range(3)])
        torch.testing.assert_close(weights[0, 0, i], torch.softmax(scores, 0))


@pytest.mark.attention
@pytest.mark.encoder
def test_gradcheck_on_a_tiny_float64_model():
    torch.manual_seed(0)
    model = tiny_model().double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])

    def forward(x):
        return model.generator(model.encoder(x, padding))

    assert torch.autograd.gradcheck(forward, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.attention
@pytest.mark.encoder
def test_parameter_gradients_match_finite_differences():
    torch.manual_seed(2)
    model = tiny_model().double()
    ids = torch.randint(0, 11, (2, 6))
    target = torch.randint(0, 11, (2, 6))
    def loss_fn():
        return F.cross_entropy(model(ids).flatten(0, 1), target.flatten())

    loss_fn().backward()
    for name in ["embeddings.token.weight", "encoder.layers.1.feed_forward.linear1.weight",
                 "encoder.layers.0.attention.out.bias", "generator.projection.weight"]:
        parameter = dict(model.named_parameters())[name]
        index = tuple(torch.randint(0, s, ()).item() for s in parameter.shape)
        with torch.no_grad():
            original = parameter[index].item()
            parameter[index] = original + 1e-6
            plus = loss_fn().item()
            parameter[index] = original - 1e-6
            minus = loss_fn().item()
            parameter[index] = original
        assert parameter.grad[index].item() == pytest.approx((plus - minus) / 2e-6, rel=1e-4, abs=1e-8), name


@pytest.mark.attention
def test_bidirectional_last_token_changes_first_position():
    torch.manual_seed(0)
    model = TransformerMLM(68).eval()
    ids = torch.randint(3, 68, (1, 32))
    changed = ids.clone()
    changed[0, -1] = 3 if ids[0, -1] != 3 else 4
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, 0], model(changed)[0, 0])


@pytest.mark.encoder
def test_post_norm_and_options_build_and_run():
    torch.manual_seed(0)
    for options in [dict(norm_first=False), dict(positional="learned"), dict(activation="relu")]:
        model = tiny_model(**options)
        assert model(torch.randint(0, 11, (2, 6))).shape == (2, 6, 11)
    assert isinstance(tiny_model(norm_first=False).encoder.final_norm, torch.nn.Identity)


def test_seed_configuration_parameter_count():
    d, d_ff, layers, vocab = 128, 256, 6, 68
    per_layer = (d * 3 * d + 3 * d) + (d * d + d) + (d * d_ff + d_ff) + (d_ff * d + d) + 2 * 2 * d
    expected = vocab * d + layers * per_layer + 2 * d + (d * vocab + vocab)
    model = TransformerMLM(vocab_size=68)
    assert model.num_parameters() == expected == 812_612


def test_embedding_scale_and_sinusoids():
    table = sinusoidal_positions(32, 128)
    assert table[0, 0] == 0 and table[0, 1] == 1
    assert table[5, 2] == pytest.approx(math.sin(5 / 10000 ** (2 / 128)), abs=1e-6)
    embeddings = Embeddings(68, 128, 32, dropout=0.0)
    ids = torch.arange(68).remainder(68)[None, :32]
    token_part = embeddings(ids) - table[:32]
    # token vectors are scaled to unit size, the same order as the positions
    assert 0.5 < token_part.pow(2).mean().sqrt().item() < 2.0


@pytest.mark.attention
def test_divisibility_and_length_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="exceeds max_len"):
        Embeddings(5, 8, 4)(torch.zeros(1, 5, dtype=torch.long))


@pytest.mark.attention
@pytest.mark.encoder
def test_the_bert_model_is_its_written_definition():
    """BertMLM against its docstrings, written out with torch.nn.functional in float64: normalised
    embeddings with token types, post-norm layers (no dropout inside the feed-forward, no final
    LayerNorm), the transform, and a decoder that is the token embeddings themselves."""
    from scratchmlm.model import BertMLM

    eps, heads = 1e-3, 3
    torch.manual_seed(0)
    model = BertMLM(vocab_size=13, d_model=12, num_heads=heads, num_layers=2, d_ff=20, max_len=7, dropout=0.0,
                    layer_norm_eps=eps).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    ids = torch.randint(0, 13, (2, 7))
    types = torch.randint(0, 2, (2, 7))
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 5:] = True
    w = dict(model.named_parameters())

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)

    x = norm(w["embeddings.token.weight"][ids] + w["embeddings.token_type.weight"][types]
             + w["embeddings.position.weight"][:7], "embeddings.norm")
    for i in range(2):
        p = f"encoder.layers.{i}."
        q, k, v = F.linear(x, w[p + "attention.qkv.weight"], w[p + "attention.qkv.bias"]).chunk(3, dim=-1)
        split = lambda t: t.view(2, 7, heads, 4).transpose(1, 2)                     # noqa: E731
        scores = split(q) @ split(k).transpose(-2, -1) / 2.0                          # sqrt(d_k) = 2
        weights = scores.masked_fill(padding[:, None, None, :], float("-inf")).softmax(-1)
        attended = (weights @ split(v)).transpose(1, 2).reshape(2, 7, 12)
        x = norm(x + F.linear(attended, w[p + "attention.out.weight"], w[p + "attention.out.bias"]), p + "norm1")
        hidden = F.gelu(F.linear(x, w[p + "feed_forward.linear1.weight"], w[p + "feed_forward.linear1.bias"]))
        x = norm(x + F.linear(hidden, w[p + "feed_forward.linear2.weight"], w[p + "feed_forward.linear2.bias"]),
                 p + "norm2")
    transformed = norm(F.gelu(F.linear(x, w["head.dense.weight"], w["head.dense.bias"])), "head.norm")
    expected = transformed @ w["embeddings.token.weight"].T + w["head.bias"]
    with torch.no_grad():
        assert (model(ids, padding, token_type_ids=types) - expected).abs().max() < 1e-12
    assert not any("decoder" in name or "generator" in name for name in w)          # tied: no second table
    assert isinstance(model.encoder.final_norm, torch.nn.Identity)
    assert model.encoder.layers[0].feed_forward.dropout.p == 0.0
