"""``attention`` for tagging: the BiLSTM tagger of ``lstm/tagger.py`` plus additive attention per token: word i
attends over the whole sentence, a_ij = softmax_j(v^T tanh(W_q h_i + W_k h_j)), and its tag is read from
[h_i; sum_j a_ij h_j]."""

from __future__ import annotations

import torch
from nlpkit_plugins.models.attention import AttentionModel
from nlpkit_plugins.models.lstm.tagger import RecurrentTagger
from torch import nn


class AttentionTagger(RecurrentTagger, AttentionModel):
    """``attention`` for tagging: the BiLSTM tagger plus an additive-attention context vector per word."""

    def build_context(self, size: int) -> None:
        a = self.options.attention_size
        self.query = nn.Linear(size, a)
        self.key = nn.Linear(size, a, bias=False)
        self.v = nn.Linear(a, 1, bias=False)
        self.context_size = 2 * size

    def context(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # scores[b, i, j] = v^T tanh(W_q h_i + W_k h_j): (batch, words, words, attention_size) before v
        scores = self.v(torch.tanh(self.query(states)[:, :, None] + self.key(states)[:, None, :])).squeeze(-1)
        weights = scores.float().masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return torch.cat([states, torch.einsum("bij,bjh->bih", weights.to(states.dtype), states)], dim=-1)
