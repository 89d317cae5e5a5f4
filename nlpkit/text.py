"""Vocabularies for models trained from scratch, fitted on the training split only (Hugging Face ``tokenizers``)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
PAD, UNK, BOS, EOS = range(4)


def train_subword_tokenizer(
    texts: Iterable[str], vocab_size: int = 16000, kind: str = "wordpiece", lowercase: bool = True
) -> Tokenizer:
    """A word-level, WordPiece, BPE or Unigram tokenizer trained on ``texts``; ids 0-3 are PAD, UNK, BOS, EOS.

    Only "word" is reproducible: the subword trainers of ``tokenizers`` break ties between equally frequent
    merges in hash-map order, which changes from process to process (huggingface/tokenizers#1794)."""
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
        tok.decoder = decoders.WordPiece()
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, end_of_word_suffix="</w>")
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="[UNK]")
        tok.decoder = decoders.Metaspace()
    else:
        raise ValueError(f"unknown tokenizer kind '{kind}' (word, wordpiece, bpe, unigram)")
    norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = (
        pre_tokenizers.Metaspace() if kind == "unigram" else pre_tokenizers.BertPreTokenizer()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_word_vocab(sequences: Iterable[list[str]], min_freq: int = 1, lowercase: bool = False) -> Tokenizer:
    """A word-level vocabulary (for taggers whose input is already split into words)."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=min_freq)
    tok.train_from_iterator((" ".join(words) for words in sequences), trainer=trainer)
    return tok


def train_reversible_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, kind: str = "bpe", lowercase: bool = False
) -> Tokenizer:
    """A BPE, WordPiece or Unigram tokenizer whose ``decode`` gives back the text (for generated output).

    Words keep their leading space as ``▁`` (Metaspace) and punctuation is split off, so joining the pieces
    and turning ``▁`` back into spaces is exact: translations are detokenized before they are scored."""
    if kind not in ("bpe", "wordpiece", "unigram"):
        raise ValueError(f"unknown tokenizer kind '{kind}' (bpe, wordpiece, unigram)")
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
    elif kind == "wordpiece":  # no "##": the "▁" already marks where words start
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=""))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                            continuing_subword_prefix="")
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="[UNK]")
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
