"""What the recurrent model plugins (``lstm``, ``attention``) share for classification and tagging: a vocabulary
fitted on the training split, batching, saving/loading and the classification predictions.

Not a plugin itself: ``lstm/__init__.py`` and ``attention/__init__.py`` subclass :class:`RecurrentModel` and add
heads; their taggers (``lstm/tagger.py``, ``attention/tagger.py``) subclass those in turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from nlpkit_plugins.models.shared.options import RecurrentOptions
from tokenizers import Tokenizer
from torch.nn.utils.rnn import pad_sequence

from nlpkit.contract import Model, TaskSpec
from nlpkit.data.tokenizers import PAD, train_subword_tokenizer


class RecurrentModel(Model):
    """Base for models trained from scratch: owns the tokenizer and the classification plumbing."""

    serves = ("classification",)
    Options = RecurrentOptions
    # From scratch: every shipped recipe trains them at 3e-3. Three epochs of a small data set are a few hundred
    # steps, far too few for weights that start random (3,400 NER sentences: 318 steps, entity F1 still rising
    # steeply): where the recipe sets no length they train at least 1,500 steps, ended by early stopping.
    train_defaults = {"*": {"lr": 3e-3, "min_steps": 1500, "early_stopping": 3}}
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

    # --- persistence: config.json, tokenizer.json, model.safetensors ---------------------
    def save_files(self, folder: Path) -> None:
        self.tokenizer.save(str(folder / "tokenizer.json"))

    @classmethod
    def from_files(cls, folder: Path, spec: TaskSpec, options: RecurrentOptions) -> Model:
        return cls(spec, options, Tokenizer.from_file(str(folder / "tokenizer.json")))

    # --- data ----------------------------------------------------------------------------
    def encode(self, example: dict) -> dict[str, Any]:
        ids = self.tokenizer.encode(example["text"]).ids[: self.options.max_length] or [PAD]
        return {"ids": ids, "length": len(ids), "label": example.get("label", -1)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "ids": pad_sequence([torch.tensor(f["ids"], dtype=torch.long) for f in features], batch_first=True,
                                padding_value=PAD),
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
