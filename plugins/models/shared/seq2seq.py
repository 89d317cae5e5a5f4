"""What every seq2seq model (``lstm``, ``attention`` and ``bert`` for the ``seq2seq`` kind) shares:
:class:`Seq2SeqModel` (subword vocabularies fitted on the training split, features, the loss, decoding and
persistence) and :class:`TiedOutput` (the decoders' output layer).

Decoding is batched greedy or beam search (``decoding.py``), stopping at end of sentence or at
``max_target_ratio`` x source length + ``max_target_extra``. The width is told, never inferred:
``prepare_inference(final)`` (called by the training loop before every prediction, by the engine for the test split
and by ``nlpkit predict``) picks ``eval_beam_size`` for validation during training (greedy by default: cheap) and the
recipe's ``beam_size`` for the test split and ``nlpkit predict``. Loading weights never changes it, so the test split
is decoded as the recipe says whether or not the best checkpoint had to be restored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.shared.decoding import beam_search, greedy_search
from tokenizers import Tokenizer
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from nlpkit.contract import Model, Options, Output, TaskSpec
from nlpkit.data.tokenizers import BOS, EOS, PAD, train_reversible_tokenizer


class TiedOutput(nn.Module):
    """Decoder features -> embedding size -> logits through the (tied) target embedding matrix."""

    def __init__(self, features: int, embed: nn.Embedding, dropout: float):
        super().__init__()
        self.proj = nn.Linear(features, embed.embedding_dim)
        self.embed = embed
        self.bias = nn.Parameter(torch.zeros(embed.num_embeddings))
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(self.dropout(self.proj(features)), self.embed.weight, self.bias)


class Seq2SeqModel(Model):
    """What every seq2seq model shares: subword vocabularies fitted on the training split, features,
    the loss, decoding and persistence. Subclasses build the network and ``encode_source``."""

    serves = ("seq2seq",)
    prefers_fp32_on_cpu = True  # step-by-step decoders: bf16 autocast is slower on CPUs without native bf16
    default_cell = "gru"
    host_inputs = ("source_lengths",)  # packing reads them on the CPU

    def __init__(self, spec: TaskSpec, options: Options, source_tokenizer: Any, target_tokenizer: Tokenizer,
                 **parts: Any):
        super().__init__(spec, options)
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.target_vocab = target_tokenizer.get_vocab_size()
        self.decode_beam = self.options.eval_beam_size  # until told otherwise by prepare_inference
        self.build(**parts)

    def build(self, **parts: Any) -> None:
        """Create the network (``parts``: prebuilt modules such as a pretrained encoder)."""
        raise NotImplementedError

    @classmethod
    def fit_source_tokenizer(cls, options: Options, train: list[dict]) -> Any:
        return train_reversible_tokenizer((ex["source"] for ex in train), options.vocab_size, options.tokenizer,
                                          options.lowercase)

    @classmethod
    def create(cls, spec: TaskSpec, options: Options, train: list[dict]) -> Seq2SeqModel:
        """Source and target vocabularies from the training split only; the target keeps its case."""
        target = train_reversible_tokenizer((ex["target"] for ex in train),
                                            options.target_vocab_size or options.vocab_size, options.tokenizer)
        return cls(spec, options, cls.fit_source_tokenizer(options, train), target)

    # --- persistence: config.json, source_tokenizer.json, target_tokenizer.json, model.safetensors ----------------
    def save_files(self, folder: Path) -> None:
        self.save_source_tokenizer(folder)
        self.target_tokenizer.save(str(folder / "target_tokenizer.json"))

    def save_source_tokenizer(self, folder: Path) -> None:
        self.source_tokenizer.save(str(folder / "source_tokenizer.json"))

    @classmethod
    def load_source_tokenizer(cls, folder: Path) -> Any:
        return Tokenizer.from_file(str(folder / "source_tokenizer.json"))

    @classmethod
    def from_files(cls, folder: Path, spec: TaskSpec, options: Options) -> Seq2SeqModel:
        """``options``: of the plugin's options class (the plugin's ``load`` passes it)."""
        return cls(spec, options, cls.load_source_tokenizer(folder),
                   Tokenizer.from_file(str(folder / "target_tokenizer.json")))

    def prepare_inference(self, final: bool) -> None:
        """Beam width for the predictions that follow: the recipe's ``beam_size`` for the test split and
        ``nlpkit predict`` (final), ``eval_beam_size`` for validation during training."""
        self.decode_beam = self.options.beam_size if final else self.options.eval_beam_size

    # --- data ----------------------------------------------------------------------------------------
    def source_ids(self, text: str) -> tuple[list[int], list[str]]:
        enc = self.source_tokenizer.encode(text)
        n = self.options.max_length
        return (enc.ids[:n] or [EOS]), (enc.tokens[:n] or ["[EOS]"])

    def encode(self, example: dict) -> dict[str, Any]:
        ids, tokens = self.source_ids(example["source"])
        features = {"source": ids, "source_tokens": tokens, "length": len(ids)}
        if example.get("target"):
            target = self.target_tokenizer.encode(example["target"]).ids[: self.options.max_length] + [EOS]
            features |= {"target": target, "length": max(len(ids), len(target)), "n_tokens": len(target)}
        return features

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        def pad(rows: list[list[int]]) -> torch.Tensor:
            return pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True,
                                padding_value=PAD)

        batch = {"source": pad([f["source"] for f in features]),
                 "source_lengths": torch.tensor([len(f["source"]) for f in features]),
                 "source_tokens": [f["source_tokens"] for f in features]}
        if all("target" in f for f in features):
            batch["target_in"] = pad([[BOS] + f["target"][:-1] for f in features])
            batch["target_out"] = pad([f["target"] for f in features])
        return batch

    # --- computation ---------------------------------------------------------------------------------
    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The decoder's start state for a batch (tensors with the batch as first dimension)."""
        raise NotImplementedError

    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor, target_in: torch.Tensor | None = None,
                target_out: torch.Tensor | None = None, **extra: Any) -> Output:
        state = self.encode_source({"source": source, "source_lengths": source_lengths, **extra})
        ratio = self.options.teacher_forcing if self.training else 1.0
        logits, attention = self.decoder(state, target_in, ratio)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target_out.flatten(), ignore_index=PAD,
                               label_smoothing=self.options.label_smoothing if self.training else 0.0)
        return Output(loss=loss, logits=logits, attentions=attention)

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], beam: int) -> tuple[list[list[int]], list]:
        state = self.encode_source(batch)
        lengths = batch["source_lengths"].to(batch["source"].device)
        max_len = (lengths * self.options.max_target_ratio + self.options.max_target_extra).long()
        if beam <= 1:
            return greedy_search(self.decoder.step, state, max_len)
        return beam_search(self.decoder.step, state, max_len, beam, self.options.length_penalty)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        ids, attention = self.generate(batch, self.decode_beam)
        texts = self.target_tokenizer.decode_batch(ids)
        out = []
        for row, text, a, src_tokens in zip(ids, texts, attention, batch["source_tokens"]):
            pred: dict[str, Any] = {"prediction": text}
            if a is not None:
                pred["attention"] = [[round(w, 3) for w in r[: len(src_tokens)]] for r in a.float().tolist()]
                pred["source_tokens"] = src_tokens
                pred["target_tokens"] = [self.target_tokenizer.id_to_token(i) for i in row] + ["[EOS]"]
            out.append(pred)
        return out
