"""``attention``: a bidirectional LSTM with additive (Bahdanau et al., 2015) attention.

Classification pools the encoder states h_i with weights a_i = softmax_i(v^T tanh(W h_i + b)) instead of
keeping only the final state, so every word can count however far it is from the end; the weights are
returned with each prediction so reports can show what the model looked at.

This module is the plugin and its classifier; the other task kinds are in ``tagger.py`` (the BiLSTM tagger with
attention per word) and ``seq2seq.py`` (Bahdanau's encoder-decoder, its decoder in ``bahdanau.py``), their options
in ``options.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.attention.options import (
    AttentionClassificationOptions,
    AttentionOptions,
    AttentionSeq2SeqOptions,
    AttentionTaggingOptions,
)
from nlpkit_plugins.models.shared.encoders import BiLSTMEncoder
from nlpkit_plugins.models.shared.recurrent import RecurrentModel
from torch import nn

import nlpkit
from nlpkit.contract import Output


class AdditivePooling(nn.Module):
    """score_i = v^T tanh(W h_i + b); padding positions get weight 0."""

    def __init__(self, size: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(size, attention_size)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.v(torch.tanh(self.proj(states))).squeeze(-1).float()
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.einsum("bt,bth->bh", weights.to(states.dtype), states), weights


class AttentionModel(RecurrentModel):
    name = "attention"
    Options = AttentionOptions
    kind_options = {"classification": AttentionClassificationOptions, "tagging": AttentionTaggingOptions,
                    "seq2seq": AttentionSeq2SeqOptions}
    serves = ("classification", "tagging", "seq2seq")
    per_kind = {"tagging": "nlpkit_plugins.models.attention.tagger:AttentionTagger",
                "seq2seq": "nlpkit_plugins.models.attention.seq2seq:AttentionSeq2Seq"}

    def build(self) -> None:
        self.encoder = BiLSTMEncoder(self.tokenizer.get_vocab_size(), self.options)
        self.pool = AdditivePooling(self.encoder.output_size, self.options.attention_size)
        self.head = nn.Linear(self.encoder.output_size, len(self.spec.labels))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None) -> Output:
        states, _ = self.encoder(ids, lengths)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None].to(ids.device)
        context, weights = self.pool(states, mask)
        logits = self.head(context)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return Output(loss=loss, logits=logits, attentions=weights)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict]:
        out = self(batch["ids"], batch["lengths"])
        extras = [{"attention": [round(w, 4) for w in weights[: int(n)].tolist()]}
                  for weights, n in zip(out.attentions, batch["lengths"])]
        return self.classification_predictions(out.logits, extras)


@nlpkit.hookimpl
def register_models(register):
    register(AttentionModel)
