"""Option fields the built-in model plugins share (each plugin's ``options.py`` composes its classes from them).

- :class:`RecurrentCore`, :class:`TextFields`, :class:`TaggingFields`: the ``lstm``/``attention`` networks and
  their vocabularies; :class:`RecurrentOptions` is every kind's options of those two plugins.
- :class:`DecoderFields`, :class:`TargetVocabField`, :class:`CellField`: the seq2seq decoders (``bert`` too).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nlpkit.contract import Options

SubwordTokenizer = Literal["word", "wordpiece", "bpe", "unigram"]
ReversibleTokenizer = Literal["bpe", "wordpiece", "unigram"]  # what train_reversible_tokenizer can detokenize


class RecurrentCore(Options):
    """The options of the ``lstm``/``attention`` networks for every task kind."""

    embedding_dim: int = Field(128, ge=1, description="Size of the word (or subword) embeddings.")
    hidden_size: int = Field(256, ge=1, description="LSTM state size per direction.")
    layers: int = Field(1, ge=1, description="Stacked LSTM layers.")
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout on embeddings and LSTM outputs.")
    lowercase: bool = Field(True, description="Lowercase the input text before building the vocabulary.")


class TextFields(Options):
    """Subword vocabulary fitted on the training split (classification and seq2seq sources)."""

    vocab_size: int = Field(16000, ge=1, description="Vocabulary size of the tokenizer fitted on the training split.")
    tokenizer: SubwordTokenizer = Field("wordpiece", description="Tokenizer fitted on the training split: word, "
                                        "wordpiece, bpe or unigram (each the same in every process: "
                                        "nlpkit.data.tokenizers).")
    max_length: int = Field(256, ge=1, description="Input tokens kept per example (the rest is cut).")


class TaggingFields(Options):
    """Word-level tagging (NER): words come pre-split, so the vocabulary is of words, not subwords."""

    char_dim: int = Field(30, ge=0, description="Character embedding size of the character CNN (0: no char CNN).")
    char_filters: int = Field(50, ge=1, description="Filters of the character CNN (its features per word).")
    crf: bool = Field(True, description="Decode tags with a CRF layer (else IOB2-constrained argmax).")
    word_dropout: float = Field(0.05, ge=0, lt=1, description="Share of training words replaced by UNK, so the UNK "
                                "embedding gets trained.")


class DecoderFields(Options):
    """Decoder training and decoding options of every seq2seq model (``lstm``, ``attention``, ``bert``)."""

    teacher_forcing: float = Field(1.0, ge=0, le=1, description="Probability of feeding the gold previous token "
                                   "to the decoder in training (else its own guess).")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the training loss.")
    beam_size: int = Field(5, ge=1, description="Beam width for the test split and `nlpkit predict` (1 = greedy).")
    length_penalty: float = Field(1.0, description="Beam hypotheses are ranked by log p / length ** length_penalty.")
    eval_beam_size: int = Field(1, ge=1, description="Beam width for validation during training (1 = greedy, cheap).")
    max_target_ratio: float = Field(1.5, gt=0, description="Decode at most ratio x source tokens + max_target_extra.")
    max_target_extra: int = Field(10, ge=0, description="Decode at most max_target_ratio x source tokens + this.")
    decoder_hidden_size: int | None = Field(None, ge=1, description="The decoder's state size; default: hidden_size.")
    defer_weight_grads: bool = Field(True, description="One matmul for the decoder's weight gradients after the "
                                     "loop instead of one per step (exact; faster on CPU).")


class TargetVocabField(Options):
    target_vocab_size: int | None = Field(None, ge=1, description="Target subword vocabulary size; "
                                          "default: vocab_size.")


class CellField(Options):
    cell: Literal["lstm", "gru"] | None = Field(None, description="The plain encoder-decoder's recurrent cell; "
                                                "default: lstm.")


class Seq2SeqFields(CellField, TargetVocabField, DecoderFields):
    """Every seq2seq option the recurrent plugins' full options class holds (vocab_size, tokenizer, embedding_dim,
    hidden_size, layers, dropout, max_length and lowercase keep their meaning; lowercase applies to the source).
    Which of them a recipe may set for a task kind is told by the plugin's ``options_for``."""


class RecurrentSeq2SeqFields(TargetVocabField, DecoderFields, TextFields):
    """The recurrent encoder-decoders' own options; the source and target tokenizers must be reversible."""

    tokenizer: ReversibleTokenizer = Field("wordpiece", description="Subword tokenizer fitted on each side of "
                                           "the training split (word cannot be detokenized).")


class RecurrentOptions(Seq2SeqFields, TaggingFields, TextFields, RecurrentCore):
    """What ``create``/``load`` receive: every kind's options (a recipe may set only those ``options_for`` its
    task kind allows; saved models keep loading whatever kind they are)."""
