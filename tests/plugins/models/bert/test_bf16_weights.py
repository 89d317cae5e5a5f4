"""The fast encoder's bf16 weight copies under CPU bf16 autocast (bf16_weights.py): the forward and gradients of
autocast's own casts (to bf16 rounding), gradients on the fp32 parameters, and copies that follow the weights after every change."""

import pytest
import torch
from nlpkit_plugins.models.bert.fast_encoder import FastBertEncoder
from nlpkit_plugins.models.bert.sparse_rows import FastAdamW
from transformers import BertConfig


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    enc = FastBertEncoder(config, pooler=False)
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.2)
    return enc


def forward(enc, ids, copies: bool):
    """Last hidden states under bf16 autocast, with the bf16 copies or (``copies`` False) autocast's own casts."""
    if not copies:
        enc._bf16_weights = lambda x: None  # the instance attribute hides the method: plain autocast
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return enc(ids).last_hidden_state
    finally:
        enc.__dict__.pop("_bf16_weights", None)


def test_same_forward_and_gradients_as_autocast(encoder):
    ids = torch.randint(0, 50, (3, 8))
    want = forward(encoder, ids, copies=False)
    want.float().square().sum().backward()
    want_grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    encoder.zero_grad(set_to_none=True)
    got = forward(encoder, ids, copies=True)
    assert encoder._bf16 is not None, "the bf16 copies were not used"
    assert got.dtype == torch.bfloat16  # bf16 rounding apart (autocast keeps the first residual in fp32): equal
    torch.testing.assert_close(got, want, rtol=0.02, atol=0.02)
    got.float().square().sum().backward()
    for name, p in encoder.named_parameters():
        if name in want_grads:  # every gradient on the fp32 parameter, in fp32, equal to autocast's
            assert p.grad is not None and p.grad.dtype == torch.float32, name
            error = (p.grad - want_grads[name]).norm() / want_grads[name].norm()
            assert error < 0.05, f"{name}: gradient off by {error:.3f} of its norm"
    assert all(c.grad is None for c in encoder._bf16.copies)  # moved, not kept twice


def test_copies_follow_an_optimizer_step_a_load_and_accumulation(encoder):
    """A fused optimizer kernel does not bump version counters: the copies must still see its step."""
    ids = torch.randint(0, 50, (2, 8))
    opt = FastAdamW([p for p in encoder.parameters()], sparse=[encoder.word], lr=0.1)
    layer = encoder.layers[0].qkv

    def copy_of_qkv():
        return encoder._bf16.current()[id(layer)][0]

    forward(encoder, ids, copies=True).float().sum().backward()
    first = layer.weight.grad.clone()
    forward(encoder, ids, copies=True).float().sum().backward()  # accumulated, as with grad_accum 2
    torch.testing.assert_close(layer.weight.grad, 2 * first)
    opt.step()
    opt.zero_grad()
    assert torch.equal(copy_of_qkv(), layer.weight.detach().to(torch.bfloat16))
    with torch.no_grad():
        layer.weight.copy_(torch.zeros_like(layer.weight))  # as a checkpoint or best-weights load does
    assert torch.equal(copy_of_qkv(), torch.zeros_like(layer.weight, dtype=torch.bfloat16))


def test_fp32_and_no_autocast_do_not_use_copies(encoder):
    ids = torch.randint(0, 50, (2, 8))
    encoder(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        encoder(ids)
    assert encoder._bf16 is None
