"""``bert`` for tagging: token classification over WordPiece sub-tokens.

The first sub-token of each word carries the word's label; the rest are ignored in the loss. A sentence longer than
the window is split into overlapping windows; each word is predicted by the one window where it sits furthest from
an edge. An uncased tokenizer (MiniLM's) throws capitalisation away, the strongest single cue for English names,
so the tagger then gives its head each word's shape (lower, Title, UPPER, mixed, digits, other) as a small learned
embedding beside the encoder's state. Tags are decoded under IOB2 constraints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.bert import BertModel
from nlpkit_plugins.models.shared.tagging import IGNORE, iob2_decoder
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from nlpkit.contract import Output, TaskSpec


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
        def pad(rows: list[list[int]], value: int) -> torch.Tensor:
            return pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True,
                                padding_value=value)

        windows = [w for f in features for w in f["windows"]]
        # where each example's words sit: (row, position) pairs in word order, padded to the longest sentence
        word_row, word_pos, row = [], [], 0
        for f in features:
            places = [(row + k, p) for k, own in enumerate(f["owned"]) for p in own]
            word_row.append([r for r, _ in places])
            word_pos.append([p for _, p in places])
            row += len(f["windows"])
        return {"input_ids": pad(windows, self.tokenizer.pad_token_id),
                "attention_mask": pad([[1] * len(w) for w in windows], 0),
                "labels": pad([lab for f in features for lab in f["labels"]], IGNORE),
                "shapes": pad([sh for f in features for sh in f["shapes"]], 0),
                "word_row": pad(word_row, 0), "word_pos": pad(word_pos, 0),
                "n_words": torch.tensor([f["n_words"] for f in features])}

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
