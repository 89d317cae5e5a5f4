"""Parts of the taggers (the ``tagging`` task kind, e.g. ``ner``) that more than one plugin uses: the label of
positions without a word's tag, IOB2-constrained decoding (:func:`iob2_decoder`), and the word-level features of
the recurrent taggers (:func:`word_key` for the word vocabulary, :func:`word_bytes` and :class:`CharCNN`)."""

from __future__ import annotations

import torch
from torch import nn
from torchcrf import CRF

IGNORE = -100  # label of positions that carry no word's tag (cross_entropy's ignore_index)
MAX_WORD_BYTES = 24  # characters the char CNN reads per word (prefix); longer words are rare and keep their end
DIGITS = str.maketrans("0123456789", "0000000000")


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

