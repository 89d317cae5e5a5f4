"""Recurrent encoders over padded batches: :func:`run_packed` (any ``nn.RNNBase`` without padding in its states),
:class:`BiLSTMEncoder` (``lstm``/``attention`` classification) and :class:`BiGRUEncoder` (``attention`` seq2seq)."""

from __future__ import annotations

from typing import Any

import torch
from nlpkit_plugins.models.shared.options import RecurrentCore
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpkit.data.tokenizers import PAD


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``length`` steps (batch, time, ...); padding stays at the end."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    lens = lengths.to(x.device)[:, None]
    index = torch.where(t < lens, lens - 1 - t, t)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


def run_packed(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Run a (batch-first) RNN over padded rows without letting padding into the states: the padded outputs and
    the final state (a tensor, or the LSTM's pair), both in the batch's order.

    The rows are sorted by length here, on the lengths the loop keeps on the CPU (``host_inputs``), and reordered
    on the device with indices sent there without waiting: what ``pack_padded_sequence(enforce_sorted=False)``
    does, the same sort and the same results, but without its copy of the order back from the GPU (a host sync)."""
    lengths = torch.as_tensor(lengths, device="cpu")
    sorted_lengths, order = torch.sort(lengths, descending=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    order, inverse = order.to(x.device, non_blocking=True), inverse.to(x.device, non_blocking=True)
    packed = pack_padded_sequence(x.index_select(0, order), sorted_lengths, batch_first=True, enforce_sorted=True)
    out, state = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    state = tuple(s.index_select(1, inverse) for s in state) if isinstance(state, tuple) else \
        state.index_select(1, inverse)
    return out.index_select(0, inverse), state


class BiLSTMEncoder(nn.Module):
    """Embeddings + bidirectional LSTM over padded batches (packed, so padding never enters the state)."""

    def __init__(self, vocab: int, options: RecurrentCore):
        super().__init__()
        self.embed = nn.Embedding(vocab, options.embedding_dim, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.lstm = nn.LSTM(options.embedding_dim, options.hidden_size, options.layers, batch_first=True,
                            bidirectional=True, dropout=options.dropout if options.layers > 1 else 0.0)
        self.dropout = nn.Dropout(options.dropout)
        self.output_size = 2 * options.hidden_size

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (batch, time, 2*hidden) and the final forward/backward states concatenated (batch, 2*hidden)."""
        x = self.dropout(self.embed(ids))
        states, (h, _) = run_packed(self.lstm, x, lengths)
        final = torch.cat([h[-2], h[-1]], dim=-1)
        return self.dropout(states), self.dropout(final)


class BiGRUEncoder(nn.Module):
    """Two one-direction GRUs; the backward one reads each sentence reversed within its length (a packed
    bidirectional ``nn.GRU`` had a backward pass growing with the square of the length on CPUs)."""

    def __init__(self, vocab: int, emb: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.fwd = nn.GRU(emb, hidden, batch_first=True)
        self.bwd = nn.GRU(emb, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.output_size = 2 * hidden

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (batch, time, 2*hidden) and [last forward state; last backward state] (batch, 2*hidden)."""
        x = self.dropout(self.embed(ids))
        out_f, h_f = run_packed(self.fwd, x, lengths)
        out_b, h_b = run_packed(self.bwd, reverse_within_length(x, lengths), lengths)
        states = torch.cat([out_f, reverse_within_length(out_b, lengths)], dim=-1)
        return self.dropout(states), torch.cat([h_f[-1], h_b[-1]], dim=-1)
