"""What the recurrent model plugins (``lstm``, ``attention``) share: a subword vocabulary fitted on the
training split, an embedding + bidirectional LSTM encoder, batching, and saving/loading.

Not a plugin itself: ``lstm.py`` and ``attention.py`` subclass :class:`RecurrentModel` and add heads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from nlpkit_plugins.models.seq2seq import Seq2SeqFields, run_packed
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch import nn

from nlpkit.contract import Model, TaskSpec
from nlpkit.text import PAD, train_subword_tokenizer


class RecurrentOptions(Seq2SeqFields):  # + the seq2seq (translation) options
    vocab_size: int = 16000
    tokenizer: str = "wordpiece"  # word | wordpiece | bpe | unigram (each the same in every process: nlpkit.text)
    lowercase: bool = True
    embedding_dim: int = 128
    hidden_size: int = 256
    layers: int = 1
    dropout: float = 0.3
    max_length: int = 256
    # tagging (ner) only: character CNN features (char_dim 0 = none), a CRF layer, words replaced by UNK in training
    char_dim: int = 30
    char_filters: int = 50
    crf: bool = True
    word_dropout: float = 0.05


class BiLSTMEncoder(nn.Module):
    """Embeddings + bidirectional LSTM over padded batches (packed, so padding never enters the state)."""

    def __init__(self, vocab: int, options: RecurrentOptions):
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


class RecurrentModel(Model):
    """Base for models trained from scratch: owns the tokenizer and the classification plumbing."""

    serves = ("classification",)
    Options = RecurrentOptions
    host_inputs = ("lengths",)  # packing reads them on the CPU
    def __init__(self, spec: TaskSpec, options: RecurrentOptions, tokenizer: Tokenizer):
        super().__init__(spec, options)
        self.tokenizer = tokenizer
        self.build()

    def build(self) -> None:
        """Create the layers for ``self.spec.kind`` (subclasses)."""
        raise NotImplementedError

    @classmethod
    def create(cls, spec: TaskSpec, options: RecurrentOptions, train: list[dict]) -> Model:
        impl = cls.kind_class(spec.kind)
        if impl is not None:
            return impl.create(spec, options, train)
        texts = (ex["text"] for ex in train)
        tok = train_subword_tokenizer(texts, options.vocab_size, options.tokenizer, options.lowercase)
        return cls(spec, options, tok)

    # --- persistence ---------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {"plugin": self.name, "spec": self.spec.to_dict(), "options": self.options.model_dump()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        self.tokenizer.save(str(folder / "tokenizer.json"))
        save_model(self, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: Path, options_cls: type[RecurrentOptions] | None = None) -> Model:
        config = json.loads((folder / "config.json").read_text())
        impl = cls.kind_class(config["spec"]["kind"])
        if impl is not None:
            return impl.load(folder, cls.Options)
        model = cls(TaskSpec(**config["spec"]), (options_cls or cls.Options)(**config["options"]),
                    Tokenizer.from_file(str(folder / "tokenizer.json")))
        load_model(model, str(folder / "model.safetensors"))
        return model

    # --- data ----------------------------------------------------------------------------
    def encode(self, example: dict) -> dict[str, Any]:
        ids = self.tokenizer.encode(example["text"]).ids[: self.options.max_length] or [PAD]
        return {"ids": ids, "length": len(ids), "label": example.get("label", -1)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(f["length"] for f in features)
        ids = torch.full((len(features), longest), PAD, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : f["length"]] = torch.tensor(f["ids"])
        return {
            "ids": ids,
            "lengths": torch.tensor([f["length"] for f in features]),
            "labels": torch.tensor([f["label"] for f in features]),
        }

    def classification_predictions(self, logits: torch.Tensor, extras: list[dict] | None = None) -> list[dict]:
        probs = logits.float().softmax(-1)
        top = probs.argmax(-1)
        out = [{"prediction": int(t), "probability": round(float(p[t]), 4)} for t, p in zip(top, probs)]
        for row, extra in zip(out, extras or []):
            row.update(extra)
        return out
