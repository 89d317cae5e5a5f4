"""``bert`` for seq2seq: a pretrained BERT (MiniLM by default) encodes the (English) source and the Bahdanau
attention decoder (``attention/bahdanau.py``) writes the target over its own subword vocabulary.

Fine-tuned end to end, with a smaller learning rate for the pretrained encoder (``encoder_lr``) than for the
decoder trained from scratch (the run's ``lr``): the encoder already knows English, the decoder knows nothing.
A BERT checkpoint trains as ``fast_encoder.FastBertEncoder``, as for the other task kinds (``fast: false``: not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from nlpkit_plugins.models.attention.bahdanau import BahdanauDecoder
from nlpkit_plugins.models.bert.fast_encoder import fast_adamw
from nlpkit_plugins.models.bert.pretrained import (
    loaded_encoder,
    pretrained_encoder,
    save_encoder_files,
    saved_encoder,
    saved_tokenizer,
)
from nlpkit_plugins.models.shared.seq2seq import Seq2SeqModel
from tokenizers import Tokenizer

from nlpkit.contract import Options, TaskSpec
from nlpkit.data.tokenizers import train_reversible_tokenizer


class BertSeq2Seq(Seq2SeqModel):
    name = "bert"

    def build(self, encoder: torch.nn.Module | None = None) -> None:
        o = self.options
        self.encoder = encoder
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

    # --- data and computation ----------------------------------------------------------------
    def source_ids(self, text: str) -> tuple[list[int], list[str]]:
        ids = self.source_tokenizer(text, truncation=True, max_length=self.options.max_length)["input_ids"]
        return ids, self.source_tokenizer.convert_ids_to_tokens(ids)

    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        ids, lengths = batch["source"], batch["source_lengths"]
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        m = mask.unsqueeze(-1).to(states.dtype)
        summary = (states * m).sum(1) / m.sum(1).clamp(min=1)
        return self.decoder.start(states, mask, summary)

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer | None:
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
