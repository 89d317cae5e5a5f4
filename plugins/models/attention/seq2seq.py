"""``attention`` for seq2seq: Bahdanau et al. (2015): a bidirectional GRU encoder and the Bahdanau attention
decoder (``bahdanau.py``)."""

from __future__ import annotations

from typing import Any

import torch
from nlpkit_plugins.models.attention.bahdanau import BahdanauDecoder
from nlpkit_plugins.models.shared.encoders import BiGRUEncoder
from nlpkit_plugins.models.shared.seq2seq import Seq2SeqModel


class AttentionSeq2Seq(Seq2SeqModel):
    """``attention`` for seq2seq: Bahdanau et al. (2015)."""

    name = "attention"

    def build(self) -> None:
        o = self.options
        self.encoder = BiGRUEncoder(self.source_tokenizer.get_vocab_size(), o.embedding_dim, o.hidden_size,
                                    o.dropout)
        self.decoder = BahdanauDecoder(self.target_vocab, o.embedding_dim, self.encoder.output_size,
                                       o.decoder_hidden_size or o.hidden_size, o.attention_size, o.dropout,
                                       o.defer_weight_grads)

    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        ids, lengths = batch["source"], batch["source_lengths"]
        states, final = self.encoder(ids, lengths)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        return self.decoder.start(states, mask, final)
