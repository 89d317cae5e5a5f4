"""The Bahdanau et al. (2015) decoder: a GRU that, before each step, scores every source state h_i with
v^T tanh(W_s s_{t-1} + W_h h_i) and is fed the weighted context (``attention`` and ``bert`` seq2seq).

Written for CPUs (each choice measured on Multi30k): decoder steps come from ``unbind`` (``x[:, t]`` had a backward
pass growing with the square of the length); the output layer, tied to the target embeddings, runs once over all
steps; and the per-step weight gradients are summed in one matmul after the loop (``deferred_grads.py``).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.attention.deferred_grads import _StepMatmul, _Steps, _WeightGrads
from nlpkit_plugins.models.shared.seq2seq import TiedOutput
from torch import nn

from nlpkit.data.tokenizers import PAD


class BahdanauDecoder(nn.Module):
    """GRU decoder with additive attention; state dicts hold tensors whose first dim is the batch (beams)."""

    def __init__(self, vocab: int, emb: int, enc: int, hidden: int, attention: int, dropout: float,
                 defer: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.bridge = nn.Linear(enc, hidden)  # s_0 = tanh(W summary)
        self.keys = nn.Linear(enc, attention, bias=False)  # W_h h_i, once per sentence
        self.query = nn.Linear(hidden, attention, bias=False)  # W_s s_{t-1}
        self.v = nn.Linear(attention, 1, bias=False)
        self.cell = nn.GRUCell(emb + enc, hidden)  # input [embedding; context]
        self.out = TiedOutput(hidden + enc + emb, self.embed, dropout)
        self.dropout = nn.Dropout(dropout)
        self.emb, self.defer = emb, defer

    def start(self, states: torch.Tensor, mask: torch.Tensor, summary: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"states": states, "keys": self.keys(states), "mask": mask, "h": torch.tanh(self.bridge(summary))}

    def attend(self, q: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.v(torch.tanh(state["keys"] + q[:, None, :])).squeeze(-1)
        weights = scores.masked_fill(~state["mask"], float("-inf")).softmax(-1)
        return torch.bmm(weights[:, None, :], state["states"]).squeeze(1), weights

    def _gru(self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """torch.nn.GRUCell from its two pre-activations (so their matmuls can be done our way)."""
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return torch.lerp(n, h.to(n.dtype), z.to(n.dtype))  # (1 - z) * n + z * h; one dtype under autocast

    def forward(self, state: dict, target_in: torch.Tensor, teacher_forcing: float = 1.0):
        """Teacher-forced logits (batch, steps, vocab) and attention (batch, steps, source)."""
        hidden = self.cell.hidden_size
        w_ie, w_ic = self.cell.weight_ih.split([self.emb, self.cell.input_size - self.emb], dim=1)
        w_hq = torch.cat([self.cell.weight_hh, self.query.weight])  # s_{t-1} feeds the GRU and the query
        b_hq = torch.cat([self.cell.bias_hh, self.cell.bias_hh.new_zeros(self.query.out_features)])
        emb = self.dropout(self.embed(target_in))
        gi_emb = F.linear(emb, w_ie, self.cell.bias_ih)  # the embedding part of every step at once
        defer = (self.defer and torch.is_grad_enabled() and self.training and teacher_forcing >= 1.0
                 and not torch.is_autocast_enabled(emb.device.type))  # the deferred matmuls are fp32-only
        h = state["h"]
        if defer:
            steps_c, steps_h = _Steps(), _Steps()
            h = _WeightGrads.apply(h, [steps_c, steps_h], w_ic, w_hq)

            def mm_c(x):
                return _StepMatmul.apply(x, w_ic, steps_c)

            def mm_h(x):
                return _StepMatmul.apply(x, w_hq, steps_h)
        else:
            def mm_c(x):
                return x @ w_ic.t()

            def mm_h(x):
                return x @ w_hq.t()
        hs, contexts, weights, embs = [], [], [], []
        prev_logits = None
        for t, gi_t in enumerate(gi_emb.unbind(1)):
            e_t = emb[:, t]
            if teacher_forcing < 1.0 and t > 0 and random.random() >= teacher_forcing:
                e_t = self.dropout(self.embed(prev_logits.argmax(-1)))  # the model's own previous guess
                gi_t = F.linear(e_t, w_ie, self.cell.bias_ih)
            ghq = mm_h(h) + b_hq
            context, a = self.attend(ghq[:, 3 * hidden:], state)
            h = self._gru(gi_t + mm_c(context), ghq[:, : 3 * hidden], h)
            hs.append(h), contexts.append(context), weights.append(a), embs.append(e_t)
            if teacher_forcing < 1.0:
                prev_logits = self.out(torch.cat([h, context, e_t], -1))
        features = torch.cat([torch.stack(hs, 1), torch.stack(contexts, 1), torch.stack(embs, 1)], -1)
        return self.out(features), torch.stack(weights, 1)

    def step(self, prev: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One decoding step: log-probabilities of the next token, the new state, the attention weights."""
        e = self.embed(prev)
        context, a = self.attend(self.query(state["h"]), state)
        h = self.cell(torch.cat([e, context], -1), state["h"])
        logits = self.out(torch.cat([h, context, e], -1))
        return logits.float().log_softmax(-1), {**state, "h": h}, a
