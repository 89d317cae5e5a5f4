"""The ``lstm`` plugin's options per task kind (the fields are in ``shared/options.py``)."""

from __future__ import annotations

from nlpkit_plugins.models.shared.options import (
    CellField,
    RecurrentCore,
    RecurrentSeq2SeqFields,
    TaggingFields,
    TextFields,
)


class LstmClassificationOptions(TextFields, RecurrentCore):
    """``lstm`` for classification."""


class LstmTaggingOptions(TaggingFields, RecurrentCore):
    """``lstm`` for tagging."""


class LstmSeq2SeqOptions(CellField, RecurrentSeq2SeqFields, RecurrentCore):
    """``lstm`` for seq2seq (Sutskever et al., 2014)."""
