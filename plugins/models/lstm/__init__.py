"""``lstm``: an embedding + bidirectional LSTM encoder; classification reads the final states.

It is the encoder half of the LSTM encoder-decoder (Sutskever et al., 2014): the whole input is
squeezed into the final state, which is what attention (the ``attention`` plugin) improves on.

This module is the plugin and its classifier; the other task kinds are in ``tagger.py`` (BiLSTM-CRF) and
``seq2seq.py`` (the encoder-decoder), their options in ``options.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.lstm.options import LstmClassificationOptions, LstmSeq2SeqOptions, LstmTaggingOptions
from nlpkit_plugins.models.shared.encoders import BiLSTMEncoder
from nlpkit_plugins.models.shared.recurrent import RecurrentModel
from torch import nn

import nlpkit
from nlpkit.contract import Options, Output


class LSTMModel(RecurrentModel):
    name = "lstm"
    serves = ("classification", "tagging", "seq2seq")
    kind_options: dict[str, type[Options]] = {"classification": LstmClassificationOptions,
                                              "tagging": LstmTaggingOptions, "seq2seq": LstmSeq2SeqOptions}
    per_kind = {"tagging": "nlpkit_plugins.models.lstm.tagger:BiLSTMTagger",
                "seq2seq": "nlpkit_plugins.models.lstm.seq2seq:PlainSeq2Seq"}

    def build(self) -> None:
        self.encoder = BiLSTMEncoder(self.tokenizer.get_vocab_size(), self.options)
        self.head = nn.Linear(self.encoder.output_size, len(self.spec.labels))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None) -> Output:
        _, final = self.encoder(ids, lengths)
        logits = self.head(final)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return Output(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict]:
        return self.classification_predictions(self(batch["ids"], batch["lengths"]).logits)


@nlpkit.hookimpl
def register_models(register):
    register(LSTMModel)
