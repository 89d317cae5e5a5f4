"""Taggers: the ``lstm``, ``attention`` and ``bert`` plugins' models for the ``tagging`` task kind (e.g. ``ner``).

Each predicts exactly one tag per word. The plugins return these classes from ``create``/``load`` when the
spec's kind is ``tagging``; they inherit the plugins' options, saving and loading.

* :class:`BiLSTMTagger` (``lstm``): word embeddings (a word vocabulary fitted on the training split; words
  lowercased, digits folded to 0) joined with a byte-level character CNN (casing, prefixes and suffixes of
  words never seen in training: Ma & Hovy, 2016), a BiLSTM, and a CRF layer (pytorch-crf) that scores whole
  tag sequences (Lample et al., 2016). ``crf: false`` gives per-word softmax, decoded under IOB2 constraints.
* :class:`AttentionTagger` (``attention``): the same, plus additive attention per token: word i attends over
  the whole sentence, a_ij = softmax_j(v^T tanh(W_q h_i + W_k h_j)), and its tag is read from [h_i; sum_j a_ij h_j].
* :class:`BertTagger` (``bert``): token classification over WordPiece sub-tokens. The first sub-token of each
  word carries the word's label; the rest are ignored in the loss. A sentence longer than the window is split
  into overlapping windows; each word is predicted by the one window where it sits furthest from an edge.
  An uncased tokenizer (MiniLM's) throws capitalisation away, the strongest single cue for English names, so
  the tagger then gives its head each word's shape (lower, Title, UPPER, mixed, digits, other) as a small
  learned embedding beside the encoder's state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.attention import AttentionModel
from nlpkit_plugins.models.bert import BertModel
from nlpkit_plugins.models.lstm import LSTMModel
from nlpkit_plugins.models.recurrent import RecurrentOptions
from nlpkit_plugins.models.seq2seq import run_packed
from torch import nn
from torchcrf import CRF

from nlpkit.contract import Output, TaskSpec
from nlpkit.data.tokenizers import PAD, UNK, train_word_vocab

IGNORE = -100  # label of positions that carry no word's tag (cross_entropy's ignore_index)
MAX_WORD_BYTES = 24  # characters the char CNN reads per word (prefix); longer words are rare and keep their end
DIGITS = str.maketrans("0123456789", "0000000000")


def word_shape(word: str) -> int:
    """1 lower, 2 Title, 3 UPPER, 4 mIxEd, 5 no letters but digits, 6 anything else (0: no word)."""
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return 5 if any(c.isdigit() for c in word) else 6
    if all(c.islower() for c in letters):
        return 1
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    return 3 if all(c.isupper() for c in letters) else 4


def word_key(word: str) -> str:
    """What the word vocabulary sees: digits folded to 0 (numbers share statistics); case is the char CNN's job."""
    return word.translate(DIGITS)


def iob2_decoder(labels: list[str]) -> CRF:
    """A CRF with fixed 0/-10000 transitions that only allows valid IOB2 (no I-X after O or after another type),
    so per-word scores decode to the best *valid* tag sequence (strict scoring counts a stray I-X as nothing)."""
    crf = CRF(len(labels), batch_first=True)
    banned = -1e4
    with torch.no_grad():
        crf.start_transitions.fill_(0.0)
        crf.end_transitions.fill_(0.0)
        crf.transitions.fill_(0.0)
        for j, tag in enumerate(labels):
            if tag.startswith("I-"):
                crf.start_transitions[j] = banned
                for i, prev in enumerate(labels):
                    if prev[2:] != tag[2:] or prev == "O":
                        crf.transitions[i, j] = banned
    crf.requires_grad_(False)
    return crf


class CharCNN(nn.Module):
    """Byte-level character features of each word: embed UTF-8 bytes, convolve, max-pool (no vocabulary to fit)."""

    def __init__(self, dim: int, filters: int, width: int = 3):
        super().__init__()
        self.embed = nn.Embedding(257, dim, padding_idx=0)  # byte b -> b + 1; 0 pads
        self.conv = nn.Conv1d(dim, filters, width, padding=width // 2)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """chars (batch, words, bytes) -> (batch, words, filters)."""
        b, t, n = chars.shape
        x = self.embed(chars.view(b * t, n)).transpose(1, 2)  # (b*t, dim, bytes)
        x = self.conv(x).masked_fill((chars.view(b * t, 1, n) == 0), float("-inf")).amax(-1)
        return torch.nan_to_num(x, neginf=0.0).view(b, t, -1)  # all-padding rows (padding words) -> 0


def word_bytes(word: str) -> list[int]:
    raw = word.encode("utf-8")
    if len(raw) > MAX_WORD_BYTES:
        raw = raw[: MAX_WORD_BYTES // 2] + raw[-MAX_WORD_BYTES // 2 :]
    return [b + 1 for b in raw] or [1]


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
        longest = max(f["length"] for f in features)
        longest_word = max(len(c) for f in features for c in f["chars"])
        ids = torch.full((len(features), longest), PAD, dtype=torch.long)
        tags = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        chars = torch.zeros((len(features), longest, longest_word), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : f["length"]] = torch.tensor(f["ids"])
            tags[i, : f["length"]] = torch.tensor(f["tags"])
            for j, c in enumerate(f["chars"]):
                chars[i, j, : len(c)] = torch.tensor(c)
        return {"ids": ids, "chars": chars, "lengths": torch.tensor([f["length"] for f in features]), "tags": tags}

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


class AttentionTagger(RecurrentTagger, AttentionModel):
    """``attention`` for tagging: the BiLSTM tagger plus an additive-attention context vector per word."""

    def build_context(self, size: int) -> None:
        a = self.options.attention_size
        self.query = nn.Linear(size, a)
        self.key = nn.Linear(size, a, bias=False)
        self.v = nn.Linear(a, 1, bias=False)
        self.context_size = 2 * size

    def context(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # scores[b, i, j] = v^T tanh(W_q h_i + W_k h_j): (batch, words, words, attention_size) before v
        scores = self.v(torch.tanh(self.query(states)[:, :, None] + self.key(states)[:, None, :])).squeeze(-1)
        weights = scores.float().masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return torch.cat([states, torch.einsum("bij,bjh->bih", weights.to(states.dtype), states)], dim=-1)


class BertTagger(BertModel):
    """``bert`` for tagging: first-sub-token labels, overlapping windows for long sentences."""

    def __init__(self, spec: TaskSpec, options: Any, encoder: nn.Module, tokenizer: Any):
        super().__init__(spec, options, encoder, tokenizer)
        if options.stride >= options.max_length - 2:
            raise ValueError(f"bert: stride ({options.stride}) must be smaller than max_length - 2")
        self.decoder = iob2_decoder(spec.labels)
        self.shapes = None  # word shapes, for tokenizers that lowercase (see the module docstring)
        if getattr(tokenizer, "do_lower_case", False):
            self.shapes = nn.Embedding(7, 32, padding_idx=0)
            self.head = nn.Linear(encoder.config.hidden_size + 32, len(spec.labels))

    # --- data ----------------------------------------------------------------------------
    def pieces(self, words: list[str]) -> list[list[int]]:
        """Sub-token ids of each word (a word the tokenizer drops, e.g. a control character, becomes [UNK])."""
        ids = self.tokenizer(words, add_special_tokens=False)["input_ids"] if words else []
        cap = (self.options.max_length - 2 - self.options.stride) // 2  # a giant word must not fill a window
        return [p[:cap] or [self.tokenizer.unk_token_id] for p in ids]

    def windows(self, n: int) -> list[tuple[int, int, int, int]]:
        """(start, end, own_from, own_to) over n sub-tokens: windows of max_length - 2 overlapping by ``stride``;
        each position is owned by exactly one window, the one where it has the most context on both sides."""
        size, overlap = self.options.max_length - 2, self.options.stride
        step = size - overlap
        starts = [0]
        while starts[-1] + size < n:
            starts.append(starts[-1] + step)
        out = []
        for k, s in enumerate(starts):
            own_from = s + overlap // 2 if k > 0 else 0
            own_to = s + step + overlap // 2 if k + 1 < len(starts) else n
            out.append((s, min(s + size, n), own_from, own_to))
        return out

    def encode(self, example: dict) -> dict[str, Any]:
        words = example["tokens"]
        pieces = self.pieces(words)
        flat = [i for p in pieces for i in p]
        firsts, pos = [], 0
        for p in pieces:
            firsts.append(pos)
            pos += len(p)
        tags = example.get("tags") or [IGNORE] * len(words)
        label_at = dict(zip(firsts, tags))
        shape_of = [word_shape(w) for w, p in zip(words, pieces) for _ in p]  # per sub-token: its word's shape
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        windows, labels, owned, shapes = [], [], [], []
        for s, e, own_from, own_to in self.windows(len(flat)):
            windows.append([cls_id, *flat[s:e], sep_id])
            shapes.append([0, *shape_of[s:e], 0])
            mine = [p for p in range(s, e) if own_from <= p < own_to and p in label_at]
            row = [IGNORE] * (e - s + 2)
            for p in mine:
                row[p - s + 1] = label_at[p]
            labels.append(row)
            owned.append([p - s + 1 for p in mine])
        return {"windows": windows, "labels": labels, "owned": owned, "shapes": shapes, "n_words": len(words),
                "length": sum(len(w) for w in windows)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [(w, lab, sh) for f in features for w, lab, sh in zip(f["windows"], f["labels"], f["shapes"])]
        longest = max(len(w) for w, _, _ in rows)
        ids = torch.full((len(rows), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
        shapes = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, (w, lab, sh) in enumerate(rows):
            ids[i, : len(w)], mask[i, : len(w)], labels[i, : len(w)] = torch.tensor(w), 1, torch.tensor(lab)
            shapes[i, : len(w)] = torch.tensor(sh)
        # where each example's words sit: (row, position) pairs in word order, padded to the longest sentence
        n_words = max(f["n_words"] for f in features)
        word_row = torch.zeros((len(features), n_words), dtype=torch.long)
        word_pos = torch.zeros((len(features), n_words), dtype=torch.long)
        row = 0
        for i, f in enumerate(features):
            places = [(row + k, p) for k, own in enumerate(f["owned"]) for p in own]
            if places:
                word_row[i, : len(places)] = torch.tensor([r for r, _ in places])
                word_pos[i, : len(places)] = torch.tensor([p for _, p in places])
            row += len(f["windows"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "shapes": shapes, "word_row": word_row,
                "word_pos": word_pos, "n_words": torch.tensor([f["n_words"] for f in features])}

    # --- computation ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                shapes: torch.Tensor | None = None, **_: torch.Tensor) -> Output:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.shapes is not None:
            shapes = shapes if shapes is not None else torch.zeros_like(input_ids)
            states = torch.cat([states, self.shapes(shapes).to(states.dtype)], -1)
        logits = self.head(self.dropout(states))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE)
        return Output(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict]:
        logits = self(batch["input_ids"], batch["attention_mask"], shapes=batch.get("shapes")).logits
        logits = logits.float().log_softmax(-1)
        words = logits[batch["word_row"], batch["word_pos"]]  # (examples, words, tags)
        n = batch["n_words"].to(words.device)
        mask = torch.arange(words.shape[1], device=words.device)[None, :] < n[:, None]
        return [{"prediction": p} for p in self.decoder.decode(words, mask)]
