"""``bert`` for seq2seq: a pretrained BERT (MiniLM by default) encodes the (English) source and the Bahdanau
attention decoder of ``seq2seq.py`` writes the target over its own subword vocabulary.

Fine-tuned end to end, with a smaller learning rate for the pretrained encoder (``encoder_lr``) than for the
decoder trained from scratch (the run's ``lr``): the encoder already knows English, the decoder knows nothing.
A BERT checkpoint trains as ``fast_bert.FastBertEncoder``, as for the other task kinds (``fast: false``: not).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from nlpkit_plugins.models.fast_bert import fast_adamw
from nlpkit_plugins.models.seq2seq import BahdanauDecoder, DecoderFields, ReversibleTokenizer, Seq2SeqModel
from pydantic import Field
from safetensors.torch import load_model
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from nlpkit.contract import Options, TaskSpec


class BertSeq2SeqFields(DecoderFields):
    """The decoder's options for ``bert`` (the lstm/attention plugins have these under the same names)."""

    target_vocab_size: int = Field(8000, ge=1, description="Target subword vocabulary size (the source uses BERT's).")
    tokenizer: ReversibleTokenizer = Field("bpe", description="Tokenizer of the target vocabulary, fitted on the "
                                           "training split.")
    embedding_dim: int = Field(256, ge=1, description="Size of the decoder's target embeddings.")
    hidden_size: int = Field(512, ge=1, description="The decoder GRU's state size (decoder_hidden_size overrides).")
    attention_size: int = Field(256, ge=1, description="Size of the additive attention's hidden layer.")
    encoder_lr: float = Field(5e-5, gt=0, description="Learning rate of the pretrained encoder (the decoder, "
                              "trained from scratch, uses the run's lr).")


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
        from nlpkit_plugins.models.bert import pretrained_encoder

        from nlpkit.data.tokenizers import train_reversible_tokenizer

        tokenizer, encoder = pretrained_encoder(options, pooler=False)
        target = train_reversible_tokenizer((ex["target"] for ex in train), options.target_vocab_size,
                                            options.tokenizer)
        return cls(spec, options, tokenizer, target, encoder=encoder)

    def save_source_tokenizer(self, folder: Path) -> None:
        self.encoder.config.save_pretrained(folder / "encoder")
        self.source_tokenizer.save_pretrained(folder / "encoder")

    @classmethod
    def load(cls, folder: Path, options_cls: type[Options] = Options) -> BertSeq2Seq:
        from nlpkit_plugins.models.bert import loaded_encoder, saved_encoder

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        encoder = saved_encoder(folder, pooler=False)
        model = cls(TaskSpec(**config["spec"]), options_cls(**config["options"]),
                    AutoTokenizer.from_pretrained(folder / "encoder"),
                    Tokenizer.from_file(str(folder / "target_tokenizer.json")), encoder=encoder)
        load_model(model, str(folder / "model.safetensors"))
        loaded_encoder(model, model.options.fast)
        return model

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
