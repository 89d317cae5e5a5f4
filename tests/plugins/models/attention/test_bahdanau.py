"""The Bahdanau decoder (attention/bahdanau.py) in ``attention``'s seq2seq model: attention weights, the deferred
weight gradients (attention/deferred_grads.py), teacher forcing below one."""

import torch


def test_attention_sums_to_one_over_real_positions(small_seq2seq):
    model, batch = small_seq2seq()
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    lengths = batch["source_lengths"]
    weights = out.attentions  # (batch, steps, source)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(weights[i, :, :n].sum(-1), torch.ones(weights.shape[1]), atol=1e-5)
        assert (weights[i, :, n:] == 0).all()
    assert lengths.min() < weights.shape[-1]  # the batch really has padding
    preds = model.predict(batch)
    for p, n in zip(preds, lengths.tolist()):
        assert len(p["attention"]) == len(p["target_tokens"]) and len(p["attention"][0]) == len(p["source_tokens"]) == n


def test_deferred_decoder_weight_gradients_equal_autograd(small_seq2seq):
    model, batch = small_seq2seq()
    model.train()
    grads = {}
    for defer in (False, True):
        model.decoder.defer = defer
        model.zero_grad()
        model(**batch).loss.backward()
        grads[defer] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    for name, g in grads[False].items():
        assert torch.allclose(grads[True][name], g, atol=1e-6, rtol=1e-4), name


def test_teacher_forcing_below_one_trains(small_seq2seq):
    model, batch = small_seq2seq(teacher_forcing=0.5)
    model.train()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.decoder.cell.weight_hh.grad.abs().sum() > 0
