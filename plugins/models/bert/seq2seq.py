"""``bert`` for seq2seq: a pretrained BERT (MiniLM by default) encodes the (English) source and the Bahdanau
attention decoder (``attention/bahdanau.py``) writes the target over its own subword vocabulary.

Fine-tuned end to end, with a smaller learning rate for the pretrained encoder (``encoder_lr``) than for the
decoder trained from scratch (the run's ``lr``): the encoder already knows English, the decoder knows nothing.
A BERT checkpoint trains as ``fast_encoder.FastBertEncoder``, as for the other task kinds (``fast: false``: not).

``frozen_layers: k`` keeps the embeddings and the bottom k layers as pretrained (no dropout, no updates) and trains
the layers above. A frozen bottom gives a source sentence the same states every epoch, so :class:`FrozenBottom`
computes them once per sentence (batched, as batches bring new sentences) and reuses them: after the first epoch
the bottom costs nothing, which buys the decoder the epochs it needs within a recipe's hour. With every layer
frozen the decoder trains against cached encoder outputs. (Cached on the fast encoder; the ``transformers`` one,
on a GPU or under DDP, recomputes its frozen bottom each step with the same result.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from nlpkit_plugins.models.attention.bahdanau import BahdanauDecoder
from nlpkit_plugins.models.bert.fast_encoder import FastBertEncoder, fast_adamw
from nlpkit_plugins.models.bert.pretrained import (
    loaded_encoder,
    pretrained_encoder,
    save_encoder_files,
    saved_encoder,
    saved_tokenizer,
)
from nlpkit_plugins.models.shared.seq2seq import Seq2SeqModel
from tokenizers import Tokenizer
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from nlpkit.contract import Options, TaskSpec
from nlpkit.data.tokenizers import train_reversible_tokenizer


class FrozenBottom:
    """The states of a fast encoder's frozen bottom (embeddings and ``layers[:k]``) per source sentence, computed
    once and kept (on the host, in the dtype they were computed in: ~1.5 KB per token at MiniLM's width in fp32).
    Not part of the model's state: a loaded or resumed model recomputes them as it meets each sentence."""

    def __init__(self, encoder: FastBertEncoder, layers: int):
        self.encoder, self.layers = encoder, layers
        self.rows: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        keys = [tuple(row[:n]) for row, n in zip(ids.tolist(), lengths)]
        new = [i for i, key in enumerate(keys) if key not in self.rows]
        if new:
            self._compute(ids[new], [lengths[i] for i in new], [keys[i] for i in new])
        return pad_sequence([self.rows[key] for key in keys], batch_first=True).to(ids.device)

    @torch.no_grad()
    def _compute(self, ids: torch.Tensor, lengths: list[int], keys: list[tuple[int, ...]]) -> None:
        ids = ids[:, : max(lengths)]
        real = torch.tensor(lengths, device=ids.device)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < real[:, None]
        was_training = self.encoder.training
        self.encoder.eval()  # frozen means as pretrained: no dropout either
        try:
            states = self.encoder.states(ids, mask.long(), last=self.layers)
        finally:
            self.encoder.train(was_training)
        for key, row, n in zip(keys, states.cpu(), lengths):
            self.rows[key] = row[:n].clone()


class BertSeq2Seq(Seq2SeqModel):
    name = "bert"

    def build(self, encoder: torch.nn.Module | None = None) -> None:
        o = self.options
        self.encoder = encoder
        self.build_frozen()
        self.decoder = BahdanauDecoder(self.target_vocab, o.embedding_dim, encoder.config.hidden_size,
                                       o.decoder_hidden_size or o.hidden_size, o.attention_size, o.dropout,
                                       o.defer_weight_grads)

    @classmethod
    def create(cls, spec: TaskSpec, options: Options, train: list[dict]) -> BertSeq2Seq:
        tokenizer, encoder = pretrained_encoder(options, pooler=False)
        target = train_reversible_tokenizer((ex["target"] for ex in train), options.target_vocab_size,
                                            options.tokenizer)
        return cls(spec, options, tokenizer, target, encoder=encoder)

    # --- persistence: config.json, encoder/ (the source side), target_tokenizer.json, model.safetensors --------
    def save_source_tokenizer(self, folder: Path) -> None:
        save_encoder_files(folder, self.encoder, self.source_tokenizer)

    @classmethod
    def from_files(cls, folder: Path, spec: TaskSpec, options: Options) -> BertSeq2Seq:
        encoder = saved_encoder(folder, pooler=False)
        return cls(spec, options, saved_tokenizer(folder), Tokenizer.from_file(str(folder / "target_tokenizer.json")),
                   encoder=encoder)

    def after_load(self) -> None:
        loaded_encoder(self, self.options.fast)
        self.build_frozen()

    def build_frozen(self) -> None:
        """Freeze the bottom ``frozen_layers`` of the (possibly converted) encoder; a fresh cache for it."""
        self.frozen = frozen_parts(self.encoder, self.options.frozen_layers)
        for part in self.frozen:
            part.requires_grad_(False)
        fast = isinstance(self.encoder, FastBertEncoder) and self.options.frozen_layers > 0
        self.bottom = FrozenBottom(self.encoder, min(self.options.frozen_layers, len(self.encoder.layers))) \
            if fast else None

    def train(self, mode: bool = True) -> BertSeq2Seq:
        """Training mode everywhere but the frozen bottom (as pretrained: no dropout)."""
        super().train(mode)
        for part in self.frozen:
            part.eval()
        return self

    # --- data and computation ----------------------------------------------------------------
    def source_ids(self, text: str) -> tuple[list[int], list[str]]:
        ids = self.source_tokenizer(text, truncation=True, max_length=self.options.max_length)["input_ids"]
        return ids, self.source_tokenizer.convert_ids_to_tokens(ids)

    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        ids, lengths = batch["source"], batch["source_lengths"]
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        if self.bottom is not None:
            below = self.bottom(ids, lengths.tolist())  # on ids.device already
            states = self.encoder.states(ids, mask.long(), first=self.bottom.layers, below=below)
        else:
            states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        m = mask.unsqueeze(-1).to(states.dtype)
        summary = (states * m).sum(1) / m.sum(1).clamp(min=1)
        return self.decoder.start(states, mask, summary)

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer | None:
        if self.options.frozen_layers:  # the word table is frozen: no sparse rows to update
            return None
        return fast_adamw(self.encoder, self.param_groups(lr, weight_decay), lr)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The pretrained encoder at ``encoder_lr``, the decoder at ``lr`` (no decay on biases/norms)."""
        groups = []
        for part, part_lr in ((self.encoder, self.options.encoder_lr), (self.decoder, lr)):
            decay, no_decay = [], []
            for name, p in part.named_parameters():
                if p.requires_grad:
                    (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
            groups += [{"params": decay, "lr": part_lr, "weight_decay": weight_decay},
                       {"params": no_decay, "lr": part_lr, "weight_decay": 0.0}]
        return groups


def frozen_parts(encoder: nn.Module, layers: int) -> list[nn.Module]:
    """The embeddings and the bottom ``layers`` layers of a fast or ``transformers`` BERT encoder."""
    if not layers:
        return []
    if isinstance(encoder, FastBertEncoder):
        embeddings = [encoder.word, encoder.emb_ln]
        return embeddings + list(encoder.layers[:layers]) + [_Params(encoder.position, encoder.token_type)]
    return [encoder.embeddings, *encoder.encoder.layer[:layers]]


class _Params(nn.Module):
    """Loose parameters (the fast encoder's position and token-type tables) as a module to freeze."""

    def __init__(self, *params: nn.Parameter):
        super().__init__()
        self.params = list(params)

    def requires_grad_(self, requires_grad: bool = True) -> _Params:
        for p in self.params:
            p.requires_grad_(requires_grad)
        return self
