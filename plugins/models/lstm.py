"""``lstm``: an embedding + bidirectional LSTM encoder; classification reads the final states.

It is the encoder half of the LSTM encoder-decoder (Sutskever et al., 2014): the whole input is
squeezed into the final state, which is what attention (``attention.py``) improves on.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.recurrent import BiLSTMEncoder, RecurrentModel
from torch import nn

import nlpkit
from nlpkit.contract import Output


class LSTMModel(RecurrentModel):
    name = "lstm"
    serves = ("classification", "tagging", "seq2seq")

    @classmethod
    def create(cls, spec, options, train):
        if spec.kind == "seq2seq" and cls is LSTMModel:
            from nlpkit_plugins.models.seq2seq import PlainSeq2Seq
            return PlainSeq2Seq.create(spec, options, train)
        if spec.kind == "tagging" and cls is LSTMModel:
            from nlpkit_plugins.models.tagging import BiLSTMTagger
            return BiLSTMTagger.create(spec, options, train)
        return super().create(spec, options, train)

    @classmethod
    def load(cls, folder):
        if cls is LSTMModel and json.loads((folder / "config.json").read_text())["spec"]["kind"] == "seq2seq":
            from nlpkit_plugins.models.seq2seq import PlainSeq2Seq
            return PlainSeq2Seq.load(folder, cls.Options)
        if cls is LSTMModel and json.loads((folder / "config.json").read_text())["spec"]["kind"] == "tagging":
            from nlpkit_plugins.models.tagging import BiLSTMTagger
            return BiLSTMTagger.load(folder)
        return super().load(folder)

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
