"""``transformer``: the Transformer of Vaswani et al. (2017), "Attention Is All You Need", trained from scratch.

Token embeddings scaled by sqrt(d_model) plus fixed sinusoidal positional encodings,
PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), then layers of multi-head
self-attention and position-wise feed-forward networks (``torch.nn.TransformerEncoderLayer`` /
``TransformerDecoderLayer``, post-norm as in the paper unless ``norm_first``). One plugin serves three task kinds:

- classification: the encoder, mean-pooled over the real (non-padding) tokens, then a linear layer;
- tagging: the encoder over the given words (one position per word), a linear layer per position;
- seq2seq: encoder-decoder with causal self-attention in the decoder, cross-attention to the source, output
  layer tied to the target embeddings (as in the paper); greedy decoding.

Vocabularies are word-level (``tokenizers`` WordLevel), fitted on the training split: word-level training is
deterministic, so the same seed gives the same model (subword trainers are not: huggingface/tokenizers#1794).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch import nn

import nlpkit
from nlpkit import Model, Options, Output, TaskSpec

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


class TransformerOptions(Options):
    """Typed options: recipe keys under the model's entry are validated against these fields."""

    d_model: int = 128  # width of every layer
    heads: int = 4  # attention heads (d_model must divide by it)
    layers: int = 2  # encoder layers (and decoder layers, for seq2seq)
    ff_dim: int = 256  # inner size of the position-wise feed-forward network
    dropout: float = 0.1
    norm_first: bool = False  # pre-norm (more stable without warmup) instead of the paper's post-norm
    max_length: int = 128  # tokens read per input (and generated per output)
    vocab_size: int = 20000  # words kept per vocabulary (the most frequent)
    min_frequency: int = 1  # words seen fewer times in training map to [UNK]
    lowercase: bool = True  # the input side; a seq2seq target keeps its case
    label_smoothing: float = 0.1  # seq2seq training loss, as in the paper


def word_vocab(texts, options: TransformerOptions, split_punctuation: bool, lowercase: bool) -> Tokenizer:
    """A word-level vocabulary fitted on ``texts``; ids 0-3 are PAD, UNK, BOS, EOS."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
    tok.pre_tokenizer = pre_tokenizers.Whitespace() if split_punctuation else pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(vocab_size=options.vocab_size, min_frequency=options.min_frequency,
                                        special_tokens=SPECIALS)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


class Embedding(nn.Module):
    """Token embedding x sqrt(d_model) + sinusoidal position encoding (computed for any length), then dropout."""

    def __init__(self, vocab: int, d_model: int, dropout: float):
        super().__init__()
        self.tokens = nn.Embedding(vocab, d_model, padding_idx=PAD)
        nn.init.normal_(self.tokens.weight, std=d_model**-0.5)
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)

    def positions(self, length: int, device: torch.device) -> torch.Tensor:
        d = self.tokens.embedding_dim
        pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
        pe = torch.zeros(length, d, device=device)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
        return pe

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) * self.scale
        return self.dropout(x + self.positions(ids.shape[1], ids.device).to(x.dtype))


class Transformer(Model):
    name = "transformer"
    serves = ("classification", "tagging", "seq2seq")
    Options = TransformerOptions

    def __init__(self, spec: TaskSpec, options: TransformerOptions, source: Tokenizer, target: Tokenizer | None):
        super().__init__(spec, options)
        self.source, self.target = source, target
        o = options
        self.embed = Embedding(source.get_vocab_size(), o.d_model, o.dropout)
        layer = nn.TransformerEncoderLayer(o.d_model, o.heads, o.ff_dim, o.dropout, batch_first=True,
                                           norm_first=o.norm_first)
        final_norm = nn.LayerNorm(o.d_model) if o.norm_first else None
        self.encoder = nn.TransformerEncoder(layer, o.layers, norm=final_norm, enable_nested_tensor=False)
        if spec.kind == "seq2seq":
            self.target_embed = Embedding(target.get_vocab_size(), o.d_model, o.dropout)
            layer = nn.TransformerDecoderLayer(o.d_model, o.heads, o.ff_dim, o.dropout, batch_first=True,
                                               norm_first=o.norm_first)
            final_norm = nn.LayerNorm(o.d_model) if o.norm_first else None
            self.decoder = nn.TransformerDecoder(layer, o.layers, norm=final_norm)
        else:
            self.head = nn.Linear(o.d_model, len(spec.labels))

    @classmethod
    def create(cls, spec: TaskSpec, options: TransformerOptions, train: list[dict]) -> Transformer:
        if spec.kind == "classification":
            return cls(spec, options, word_vocab((ex["text"] for ex in train), options, True, options.lowercase), None)
        if spec.kind == "tagging":
            words = (" ".join(ex["tokens"]) for ex in train)
            return cls(spec, options, word_vocab(words, options, False, options.lowercase), None)
        source = word_vocab((ex["source"] for ex in train), options, True, options.lowercase)
        return cls(spec, options, source, word_vocab((ex["target"] for ex in train), options, False, False))

    # --- persistence -------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {"plugin": self.name, "spec": self.spec.to_dict(), "options": self.options.model_dump()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        self.source.save(str(folder / "source_vocab.json"))
        if self.target is not None:
            self.target.save(str(folder / "target_vocab.json"))
        save_model(self, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: Path) -> Transformer:
        config = json.loads((folder / "config.json").read_text())
        target = folder / "target_vocab.json"
        model = cls(TaskSpec(**config["spec"]), cls.Options(**config["options"]),
                    Tokenizer.from_file(str(folder / "source_vocab.json")),
                    Tokenizer.from_file(str(target)) if target.exists() else None)
        load_model(model, str(folder / "model.safetensors"))
        return model

    # --- data --------------------------------------------------------------------------------------
    def encode(self, example: dict) -> dict[str, Any]:
        n = self.options.max_length
        if self.spec.kind == "tagging":
            words = example["tokens"]
            ids = self.source.encode(words, is_pretokenized=True).ids[:n] or [UNK]
            tags = list(example.get("tags", []))[:n]
            return {"ids": ids, "length": len(ids), "tags": tags, "words": len(words)}
        text = example["text"] if self.spec.kind == "classification" else example["source"]
        ids = self.source.encode(text).ids[:n] or [UNK]
        if self.spec.kind == "classification":
            return {"ids": ids, "length": len(ids), "label": example.get("label", -1)}
        target = self.target.encode(example["target"]).ids[: n - 2] if "target" in example else []
        return {"ids": ids, "length": len(ids), "target": [BOS, *target, EOS], "n_tokens": len(target) + 1}

    @staticmethod
    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"ids": self.pad([f["ids"] for f in features], PAD)}
        if self.spec.kind == "classification":
            batch["labels"] = torch.tensor([f["label"] for f in features])
        elif self.spec.kind == "tagging":
            batch["tags"] = self.pad([f["tags"] or [-100] for f in features], -100)
            batch["words"] = torch.tensor([f["words"] for f in features])
        else:
            batch["target"] = self.pad([f["target"] for f in features], PAD)
        return batch

    # --- computation -------------------------------------------------------------------------------
    def encode_source(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding = ids == PAD
        return self.encoder(self.embed(ids), src_key_padding_mask=padding), padding

    def decode(self, memory: torch.Tensor, padding: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Logits for the next token at every target position (causal: position t sees tokens <= t)."""
        n = target_in.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=target_in.device).triu(1)  # True = may not attend
        states = self.decoder(self.target_embed(target_in), memory, tgt_mask=causal, tgt_is_causal=True,
                              tgt_key_padding_mask=target_in == PAD, memory_key_padding_mask=padding)
        return states @ self.target_embed.tokens.weight.T  # tied output layer

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None, tags: torch.Tensor | None = None,
                words: torch.Tensor | None = None, target: torch.Tensor | None = None) -> Output:
        states, padding = self.encode_source(ids)
        if self.spec.kind == "classification":
            keep = (~padding).unsqueeze(-1).to(states.dtype)
            logits = self.head((states * keep).sum(1) / keep.sum(1))
            loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        elif self.spec.kind == "tagging":
            logits = self.head(states)
            loss = F.cross_entropy(logits.float().flatten(0, 1), tags.flatten()) if tags is not None else None
        else:
            logits = self.decode(states, padding, target[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), target[:, 1:].flatten(), ignore_index=PAD,
                                   label_smoothing=self.options.label_smoothing if self.training else 0.0)
        return Output(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict]:
        if self.spec.kind == "seq2seq":
            return [{"prediction": text} for text in self.generate(batch["ids"])]
        logits = self(batch["ids"]).logits.float()
        if self.spec.kind == "classification":
            probs = logits.softmax(-1)
            return [{"prediction": int(p.argmax()), "probability": round(float(p.max()), 4)} for p in probs]
        out = []
        for row, n_ids, n_words in zip(logits.argmax(-1), (batch["ids"] != PAD).sum(1), batch["words"]):
            tags = row[: int(n_ids)].tolist()
            out.append({"prediction": tags + [0] * (int(n_words) - len(tags))})  # words past max_length: tag 0
        return out

    def generate(self, ids: torch.Tensor) -> list[str]:
        """Greedy decoding, the whole batch at once, until every sentence has ended (or the length limit)."""
        memory, padding = self.encode_source(ids)
        steps = min(self.options.max_length, int((~padding).sum(1).max()) * 2 + 10)
        out = torch.full((ids.shape[0], 1), BOS, dtype=torch.long, device=ids.device)
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(steps):
            step = self.decode(memory, padding, out)[:, -1].argmax(-1)
            step = step.masked_fill(done, PAD)
            out = torch.cat([out, step[:, None]], dim=1)
            done |= step == EOS
            if done.all():
                break
        texts = []
        for row in out[:, 1:].tolist():
            row = row[: row.index(EOS)] if EOS in row else row
            texts.append(self.target.decode([t for t in row if t != PAD]))
        return texts


@nlpkit.hookimpl
def register_models(register):
    register(Transformer)
