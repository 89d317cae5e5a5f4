"""Vocabularies for models trained from scratch, fitted on the training split only.

Encoding at run time is Hugging Face ``tokenizers`` (fast, saved as one ``tokenizer.json``); the subword
vocabularies are trained here, not by its trainers: those break ties between equally frequent merges (and
order the alphabet) in hash-map order, which changes from process to process (huggingface/tokenizers#1794), so
the same recipe and seed gave another vocabulary, hence other numbers, in a new process. Every choice below
is a function of the data and the settings alone: ties go to the smallest pair of strings, pieces of equal
score are ordered by their text, and sums run in a fixed order.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
PAD, UNK, BOS, EOS = range(4)


def train_subword_tokenizer(
    texts: Iterable[str], vocab_size: int = 16000, kind: str = "wordpiece", lowercase: bool = True
) -> Tokenizer:
    """A word-level, WordPiece, BPE or Unigram tokenizer trained on ``texts``; ids 0-3 are PAD, UNK, BOS, EOS.
    The same texts and settings give the same tokenizer in any process (see the module docstring)."""
    if kind not in ("word", "wordpiece", "bpe", "unigram"):
        raise ValueError(f"unknown tokenizer kind '{kind}' (word, wordpiece, bpe, unigram)")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))  # replaced by the trained model in _fit
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
    tok.pre_tokenizer = pre_tokenizers.Metaspace() if kind == "unigram" else pre_tokenizers.BertPreTokenizer()
    tok.decoder = {"wordpiece": decoders.WordPiece(), "bpe": decoders.BPEDecoder(suffix="</w>"),
                   "unigram": decoders.Metaspace()}.get(kind)
    _fit(tok, texts, kind, vocab_size, prefix="##" if kind == "wordpiece" else "",
         suffix="</w>" if kind == "bpe" else "")
    return tok


def train_word_vocab(sequences: Iterable[list[str]], min_freq: int = 1, lowercase: bool = False) -> Tokenizer:
    """A word-level vocabulary (for taggers whose input is already split into words)."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    _fit(tok, (" ".join(words) for words in sequences), "word", None, min_freq=min_freq)
    return tok


def train_reversible_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, kind: str = "bpe", lowercase: bool = False
) -> Tokenizer:
    """A BPE, WordPiece or Unigram tokenizer whose ``decode`` gives back the text (for generated output).

    Words keep their leading space as ``▁`` (Metaspace) and punctuation is split off, so joining the pieces
    and turning ``▁`` back into spaces is exact: translations are detokenized before they are scored.
    WordPiece has no "##": the "▁" already marks where words start."""
    if kind not in ("bpe", "wordpiece", "unigram"):
        raise ValueError(f"unknown tokenizer kind '{kind}' (bpe, wordpiece, unigram)")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))  # replaced by the trained model in _fit
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    _fit(tok, texts, kind, vocab_size)
    return tok


# --- deterministic trainers ------------------------------------------------------------------------------


def _fit(tok: Tokenizer, texts: Iterable[str], kind: str, vocab_size: int | None, prefix: str = "",
         suffix: str = "", min_freq: int = 1) -> None:
    """Count the words ``tok`` would see (its own normalizer and pre-tokenizer), train ``kind`` on them and
    install the model; the specials take ids 0-3 in every kind."""
    words = _count_words(tok, texts)
    if kind == "word":
        kept = [w for w, n in sorted(words.items(), key=lambda wn: (-wn[1], wn[0])) if n >= min_freq]
        limit = len(kept) if vocab_size is None else max(0, vocab_size - len(SPECIALS))
        tok.model = models.WordLevel(vocab=_ids(SPECIALS + kept[:limit]), unk_token="[UNK]")
    elif kind == "unigram":
        pieces = _unigram_pieces(words, vocab_size - len(SPECIALS))
        tok.model = models.Unigram([(s, 0.0) for s in SPECIALS] + pieces, unk_id=UNK)
    else:
        vocab, merges = _bpe(words, vocab_size, prefix, suffix)
        if kind == "bpe":
            affixes = {k: v for k, v in (("end_of_word_suffix", suffix), ("continuing_subword_prefix", prefix)) if v}
            tok.model = models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]", **affixes)
        else:  # WordPiece: the vocabulary of BPE with the continuing prefix, matched longest first
            tok.model = models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix=prefix)
    tok.add_special_tokens(SPECIALS)


def _count_words(tok: Tokenizer, texts: Iterable[str]) -> Counter[str]:
    """How often each pre-tokenized word occurs (keys in order of first occurrence)."""
    words: Counter[str] = Counter()
    norm, pre = tok.normalizer, tok.pre_tokenizer
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text) if norm else text))
    return words


def _ids(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


def _bpe(words: Counter[str], vocab_size: int, prefix: str, suffix: str) -> tuple[dict[str, int], list]:
    """Byte-pair encoding (Sennrich et al., 2016) over characters: repeatedly merge the most frequent adjacent
    pair; among equally frequent pairs the smallest (left, right) strings, so no order depends on a hash.
    A word's later characters carry ``prefix`` and its last one ``suffix`` (WordPiece's "##", BPE's "</w>")."""
    texts, counts = list(words), list(words.values())
    symbols: list[list[str]] = []
    for w in texts:
        syms = [c if i == 0 else prefix + c for i, c in enumerate(w)]
        syms[-1] += suffix
        symbols.append(syms)
    vocab = _ids(SPECIALS + sorted({s for syms in symbols for s in syms}))
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, syms in enumerate(symbols):
        for pair in zip(syms, syms[1:]):
            pairs[pair] += counts[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-n, a, b) for (a, b), n in pairs.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size and heap:
        n, a, b = heapq.heappop(heap)
        if pairs.get((a, b), 0) != -n or n == 0:
            continue  # a stale entry: the pair's count changed since it was pushed
        merged = a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)
        merges.append((a, b))
        vocab.setdefault(merged, len(vocab))
        changed: set[tuple[str, str]] = set()
        for i in where.pop((a, b), ()):  # the heap orders pairs totally: the visiting order does not matter
            syms, c = symbols[i], counts[i]
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            symbols[i] = out
            touched = (a, b, merged)  # pairs of other symbols are the same before and after
            for pair in zip(syms, syms[1:]):
                if pair[0] in touched or pair[1] in touched:
                    pairs[pair] -= c
                    changed.add(pair)
            for pair in zip(out, out[1:]):
                if pair[0] in touched or pair[1] in touched:
                    pairs[pair] += c
                    where.setdefault(pair, set()).add(i)
                    changed.add(pair)
        for pair in changed:
            if pairs[pair] > 0:
                heapq.heappush(heap, (-pairs[pair], *pair))
            else:
                del pairs[pair]
    return vocab, merges


def _logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs)) if top > -math.inf else top


def _unigram_pieces(words: Counter[str], size: int, max_len: int = 16, seed_factor: int = 4,
                    shrink: float = 0.75) -> list[tuple[str, float]]:
    """A unigram language model over subwords (Kudo, 2018), as SentencePiece trains it in outline: seed with the
    most frequent substrings, re-estimate piece probabilities by EM (forward-backward over each distinct word),
    drop the pieces whose loss costs the corpus least, until ``size`` remain. Every character stays (no input
    is unknown). Sums run in word order and ties are broken by the pieces' text, so the result is a function
    of the data alone. Returns (piece, log probability), most probable first."""
    chars = sorted({c for w in words for c in w})
    substrings: Counter[str] = Counter()
    for w, n in words.items():
        for i in range(len(w)):
            for j in range(i + 2, min(len(w), i + max_len) + 1):
                substrings[w[i:j]] += n
    seeds = sorted(substrings.items(), key=lambda sn: (-sn[1] * len(sn[0]), sn[0]))[: seed_factor * size]
    counts = {c: float(sum(n * w.count(c) for w, n in words.items())) for c in chars} | dict(seeds)
    logp = _normalize(counts)
    single = set(chars)

    def expected(logp: dict[str, float]) -> dict[str, float]:
        found = dict.fromkeys(logp, 0.0)
        for w, n in words.items():
            m = len(w)
            alpha = [0.0] + [-math.inf] * m
            for j in range(1, m + 1):
                alpha[j] = _logsumexp([alpha[i] + logp[w[i:j]] for i in range(max(0, j - max_len), j)
                                       if w[i:j] in logp] or [-math.inf])
            beta = [-math.inf] * m + [0.0]
            for i in range(m - 1, -1, -1):
                beta[i] = _logsumexp([logp[w[i:j]] + beta[j] for j in range(i + 1, min(m, i + max_len) + 1)
                                      if w[i:j] in logp] or [-math.inf])
            for i in range(m):
                for j in range(i + 1, min(m, i + max_len) + 1):
                    piece = w[i:j]
                    if piece in logp:
                        found[piece] += n * math.exp(alpha[i] + logp[piece] + beta[j] - alpha[m])
        return found

    def em(logp: dict[str, float]) -> dict[str, float]:
        for _ in range(2):
            found = expected(logp)
            logp = _normalize({p: c for p, c in found.items() if c >= 0.5 or p in single}, floor=1e-3)
        return logp

    logp = em(logp)
    while len(logp) > size:
        found = expected(logp)
        loss = {}
        for piece in logp:
            if piece in single:
                continue
            without = _viterbi(piece, logp, max_len, skip=piece)
            loss[piece] = found[piece] * (logp[piece] - without)
        keep = max(size, int(shrink * len(logp)))
        ranked = sorted(loss, key=lambda p: (-loss[p], p))[: max(0, keep - len(single))]
        logp = em({p: logp[p] for p in logp if p in single or p in set(ranked)})
    return sorted(logp.items(), key=lambda pl: (-pl[1], pl[0]))


def _normalize(counts: dict[str, float], floor: float = 0.0) -> dict[str, float]:
    total = math.fsum(max(c, floor) for c in counts.values())
    return {p: math.log(max(c, floor) / total) for p, c in counts.items()}


def _viterbi(text: str, logp: dict[str, float], max_len: int, skip: str) -> float:
    """Log probability of the best segmentation of ``text`` into pieces other than ``skip``."""
    best = [0.0] + [-math.inf] * len(text)
    for j in range(1, len(text) + 1):
        for i in range(max(0, j - max_len), j):
            piece = text[i:j]
            if piece != skip and piece in logp and best[i] + logp[piece] > best[j]:
                best[j] = best[i] + logp[piece]
    return best[-1]
