"""``lstm`` for tagging: :class:`BiLSTMTagger`, and :class:`RecurrentTagger`, the tagging half it shares with
``attention``'s tagger.

Word embeddings (a word vocabulary fitted on the training split; words lowercased, digits folded to 0) joined with
a byte-level character CNN (casing, prefixes and suffixes of words never seen in training: Ma & Hovy, 2016), a
BiLSTM, and a CRF layer (pytorch-crf) that scores whole tag sequences (Lample et al., 2016). ``crf: false`` gives
per-word softmax, decoded under IOB2 constraints. Each predicts exactly one tag per word.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.lstm import LSTMModel
from nlpkit_plugins.models.shared.encoders import run_packed
from nlpkit_plugins.models.shared.options import RecurrentOptions
from nlpkit_plugins.models.shared.tagging import IGNORE, CharCNN, iob2_decoder, word_bytes, word_key
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torchcrf import CRF

from nlpkit.contract import Output, TaskSpec
from nlpkit.data.tokenizers import PAD, UNK, train_word_vocab


class RecurrentTagger:
    """The tagging half shared by :class:`BiLSTMTagger` and :class:`AttentionTagger` (a mixin over the plugin
    classes, whose ``__init__`` stores the word vocabulary as ``self.tokenizer`` and calls :meth:`build`)."""

    options: RecurrentOptions
    spec: TaskSpec

    @classmethod
    def create(cls, spec: TaskSpec, options: RecurrentOptions, train: list[dict]):
        vocab = train_word_vocab(([word_key(w) for w in ex["tokens"]] for ex in train), lowercase=options.lowercase)
        return cls(spec, options, vocab)

    def build(self) -> None:
        o, n_tags = self.options, len(self.spec.labels)
        self.embed = nn.Embedding(self.tokenizer.get_vocab_size(), o.embedding_dim, padding_idx=PAD)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.chars = CharCNN(o.char_dim, o.char_filters) if o.char_dim > 0 else None
        size = o.embedding_dim + (o.char_filters if self.chars else 0)
        self.lstm = nn.LSTM(size, o.hidden_size, o.layers, batch_first=True, bidirectional=True,
                            dropout=o.dropout if o.layers > 1 else 0.0)
        self.dropout = nn.Dropout(o.dropout)
        self.build_context(2 * o.hidden_size)
        self.emissions = nn.Linear(self.context_size, n_tags)
        self.crf = CRF(n_tags, batch_first=True) if o.crf else None
        self.decoder = None if o.crf else iob2_decoder(self.spec.labels)

    def build_context(self, size: int) -> None:
        """Layers between the BiLSTM states and the tag scores (none here; attention adds its own)."""
        self.context_size = size

    def context(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return states

    # --- data ----------------------------------------------------------------------------
    def encode(self, example: dict) -> dict[str, Any]:
        words = example["tokens"]
        ids = self.tokenizer.encode([word_key(w) for w in words], is_pretokenized=True).ids
        if len(ids) != len(words):  # a "word" the pre-tokenizer split further (whitespace inside): look up each
            ids = [(self.tokenizer.token_to_id(word_key(w).lower() if self.options.lowercase else word_key(w))
                    or UNK) for w in words]
        return {"ids": ids, "chars": [word_bytes(w) for w in words], "length": len(words),
                "tags": example.get("tags") or [IGNORE] * len(words)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        def pad(rows: list[Any], value: int) -> torch.Tensor:
            return pad_sequence(rows, batch_first=True, padding_value=value)

        def long(values: list) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long)

        # chars: every word's bytes padded to the batch's longest word, then the sentences to the longest sentence
        words = pad([long(c) for f in features for c in f["chars"]], 0)
        chars = pad(list(words.split([len(f["chars"]) for f in features])), 0)
        return {"ids": pad([long(f["ids"]) for f in features], PAD), "chars": chars,
                "lengths": torch.tensor([f["length"] for f in features]),
                "tags": pad([long(f["tags"]) for f in features], IGNORE)}

    # --- computation ---------------------------------------------------------------------
    def scores(self, ids: torch.Tensor, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-word tag scores (batch, words, tags)."""
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None].to(ids.device)
        if self.training and self.options.word_dropout > 0:  # UNK some words so the UNK embedding gets trained
            drop = torch.rand(ids.shape, device=ids.device) < self.options.word_dropout
            ids = ids.masked_fill(drop & mask, UNK)
        x = self.embed(ids)
        if self.chars is not None:
            x = torch.cat([x, self.chars(chars)], dim=-1)
        states = run_packed(self.lstm, self.dropout(x), lengths)[0]
        return self.emissions(self.dropout(self.context(self.dropout(states), mask))).float()

    def forward(self, ids: torch.Tensor, chars: torch.Tensor, lengths: torch.Tensor,
                tags: torch.Tensor | None = None) -> Output:
        scores = self.scores(ids, chars, lengths)
        loss = None
        if tags is not None:
            if self.crf is not None:
                mask = tags != IGNORE
                loss = -self.crf(scores, tags.clamp(min=0), mask, reduction="token_mean")
            else:
                loss = F.cross_entropy(scores.transpose(1, 2), tags, ignore_index=IGNORE)
        return Output(loss=loss, logits=scores)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict]:
        scores = self.scores(batch["ids"], batch["chars"], batch["lengths"])
        mask = torch.arange(scores.shape[1], device=scores.device)[None, :] < batch["lengths"][:, None].to(
            scores.device)
        if self.crf is not None:
            return [{"prediction": p} for p in self.crf.decode(scores, mask)]
        return [{"prediction": p} for p in self.decoder.decode(scores.log_softmax(-1), mask)]


class BiLSTMTagger(RecurrentTagger, LSTMModel):
    """``lstm`` for tagging: BiLSTM(-CRF) over word embeddings + character CNN features."""

