"""The ``bert`` plugin's options: the pretrained encoder's for every task kind, plus each kind's own."""

from __future__ import annotations

from typing import Literal

from nlpkit_plugins.models.shared.options import CellField, DecoderFields, ReversibleTokenizer
from pydantic import Field

from nlpkit.contract import Options


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
    frozen_layers: int = Field(0, ge=0, description="Encoder layers kept as pretrained, from the bottom (the "
                               "embeddings with them): their states are computed once per source sentence and "
                               "reused, so training costs only the layers above. 0: fine-tune all; the encoder's "
                               "depth or more: train only the decoder.")


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
