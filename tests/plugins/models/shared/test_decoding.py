"""Batched greedy and beam search (shared/decoding.py), on toy decoders and on the recurrent seq2seq models."""

import pytest
import torch
from nlpkit_plugins.models.attention import AttentionModel
from nlpkit_plugins.models.lstm import LSTMModel
from nlpkit_plugins.models.shared.decoding import beam_search, greedy_search

from nlpkit.data.tokenizers import BOS, EOS


@pytest.mark.parametrize("plugin", [AttentionModel, LSTMModel])
def test_beam_of_one_is_greedy(plugin, small_seq2seq):
    model, batch = small_seq2seq(plugin)
    model.eval()
    with torch.no_grad():
        greedy, _ = model.generate(batch, beam=1)
        state = model.encode_source(batch)
        max_len = (batch["source_lengths"] * 1.5 + 10).long()
        beam, _ = beam_search(model.decoder.step, state, max_len, beam=1)
    assert beam == greedy and max(map(len, greedy)) > 0


def test_beam_finds_the_better_sequence_greedy_misses():
    """Toy decoder over tokens {EOS, A=4, B=5}: after BOS, A (0.6) beats B (0.4), but after A every token is
    equally likely, while B is followed by EOS with p=1: p(B EOS) = 0.4 > p(A EOS) = 0.6 / 3 = 0.2."""
    A, B, V = 4, 5, 6

    def step(prev, state):
        p = torch.full((prev.shape[0], V), 1e-9)
        for i, tok in enumerate(prev.tolist()):
            if tok == BOS:
                p[i, A], p[i, B] = 0.6, 0.4
            elif tok == A:
                p[i, A] = p[i, B] = p[i, EOS] = 1 / 3
            else:
                p[i, EOS] = 1.0
        return p.log(), {"h": state["h"]}, None

    state, max_len = {"h": torch.zeros(2, 1)}, torch.tensor([6, 6])
    greedy, _ = greedy_search(step, state, max_len)
    beam, _ = beam_search(step, state, max_len, beam=3, length_penalty=0.0)
    assert greedy[0][0] == A and beam == [[B], [B]]
