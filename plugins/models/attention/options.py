"""The ``attention`` plugin's options: the ``lstm`` ones per task kind plus the attention's size."""

from __future__ import annotations

from nlpkit_plugins.models.lstm.options import LstmClassificationOptions, LstmTaggingOptions
from nlpkit_plugins.models.shared.options import RecurrentCore, RecurrentOptions, RecurrentSeq2SeqFields
from pydantic import Field

from nlpkit.contract import Options


class AttentionField(Options):
    attention_size: int = Field(128, ge=1, description="Size of the additive attention's hidden layer.")


class AttentionClassificationOptions(AttentionField, LstmClassificationOptions):
    """``attention`` for classification."""


class AttentionTaggingOptions(AttentionField, LstmTaggingOptions):
    """``attention`` for tagging."""


class AttentionSeq2SeqOptions(AttentionField, RecurrentSeq2SeqFields, RecurrentCore):
    """``attention`` for seq2seq (Bahdanau et al., 2015)."""


class AttentionOptions(AttentionField, RecurrentOptions):
    """What ``create``/``load`` receive: every kind's options (see ``RecurrentOptions``)."""
