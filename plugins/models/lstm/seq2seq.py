"""``lstm`` for seq2seq: the encoder-decoder of Sutskever et al. (2014). A recurrent encoder reads the source
reversed and the decoder starts from its final state; the whole sentence must fit in that one state, no attention
(what ``attention`` improves on)."""

from __future__ import annotations

import random
from typing import Any

import torch
from nlpkit_plugins.models.shared.encoders import reverse_within_length, run_packed
from nlpkit_plugins.models.shared.seq2seq import Seq2SeqModel, TiedOutput
from torch import nn

from nlpkit.data.tokenizers import PAD


class PlainDecoder(nn.Module):
    """Sutskever et al.: an LSTM/GRU that starts from the encoder's final state; no attention."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int, cell: str, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.1)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(emb, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out = TiedOutput(hidden, self.embed, dropout)
        self.dropout = nn.Dropout(dropout)
        self.lstm = cell == "lstm"

    def start(self, final) -> dict[str, torch.Tensor]:
        """Encoder final state(s) (layers, batch, hidden) -> batch-first state tensors."""
        if self.lstm:
            return {"h": final[0].transpose(0, 1), "c": final[1].transpose(0, 1)}
        return {"h": final.transpose(0, 1)}

    def _hx(self, state: dict):
        h = state["h"].transpose(0, 1).contiguous()
        return (h, state["c"].transpose(0, 1).contiguous()) if self.lstm else h

    def forward(self, state: dict, target_in: torch.Tensor, teacher_forcing: float = 1.0):
        if teacher_forcing >= 1.0:  # every step's input is known: one call runs them all
            out, _ = self.rnn(self.dropout(self.embed(target_in)), self._hx(state))
            return self.out(out), None
        logits, prev = [], target_in[:, 0]
        for t in range(target_in.shape[1]):
            if t > 0:
                prev = target_in[:, t] if random.random() < teacher_forcing else logits[-1].argmax(-1)
            out, hx = self.rnn(self.dropout(self.embed(prev))[:, None], self._hx(state))
            state = self.start(hx)
            logits.append(self.out(out[:, 0]))
        return torch.stack(logits, 1), None

    def step(self, prev: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, None]:
        out, hx = self.rnn(self.embed(prev)[:, None], self._hx(state))
        return self.out(out[:, 0]).float().log_softmax(-1), self.start(hx), None


class PlainSeq2Seq(Seq2SeqModel):
    """``lstm`` for seq2seq: Sutskever et al. (2014), source read reversed, no attention."""

    name = "lstm"
    default_cell = "lstm"

    def build(self) -> None:
        o = self.options
        cell = o.cell or self.default_cell
        hidden = o.decoder_hidden_size or o.hidden_size
        self.src_embed = nn.Embedding(self.source_tokenizer.get_vocab_size(), o.embedding_dim, padding_idx=PAD)
        nn.init.normal_(self.src_embed.weight, std=0.1)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.encoder = rnn(o.embedding_dim, hidden, o.layers, batch_first=True,
                           dropout=o.dropout if o.layers > 1 else 0.0)
        self.dropout = nn.Dropout(o.dropout)
        self.decoder = PlainDecoder(self.target_vocab, o.embedding_dim, hidden, o.layers, cell, o.dropout)

    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        lengths = batch["source_lengths"]
        x = self.dropout(self.src_embed(reverse_within_length(batch["source"], lengths)))
        _, final = run_packed(self.encoder, x, lengths)
        return self.decoder.start(final)
