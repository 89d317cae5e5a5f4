"""Issue #14 point 5: every vocabulary nlpkit trains is a function of the training data and the settings, the
same in any process on any machine (the trainers of ``tokenizers`` broke ties in hash-map order:
huggingface/tokenizers#1794), while encoding stays ``tokenizers``' fast one."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from nlpkit.data.tokenizers import SPECIALS, _bpe, train_reversible_tokenizer

# Trains every kind nlpkit offers on data full of equally frequent pairs and writes each tokenizer.json.
TRAIN_ALL = """
import sys
from pathlib import Path
from nlpkit.testing import tiny_records
from nlpkit.data.tokenizers import train_reversible_tokenizer, train_subword_tokenizer, train_word_vocab

out = Path(sys.argv[1])
texts = [r["text"] for r in tiny_records("classification", 40)]
targets = [r["target"] for r in tiny_records("seq2seq", 40)]
for kind in ("word", "wordpiece", "bpe", "unigram"):
    train_subword_tokenizer(texts, 120, kind).save(str(out / f"subword-{kind}.json"))
for kind in ("bpe", "wordpiece", "unigram"):
    train_reversible_tokenizer(targets, 80, kind).save(str(out / f"reversible-{kind}.json"))
train_word_vocab(r["tokens"] for r in tiny_records("tagging", 40)).save(str(out / "word-vocab.json"))
"""


def test_every_tokenizer_kind_is_identical_in_two_fresh_processes(tmp_path):
    folders = []
    for hash_seed in ("1", "2"):  # Python's own hashing differs too
        folder = tmp_path / f"process-{hash_seed}"
        folder.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", TRAIN_ALL, str(folder)], check=True, env=env, timeout=120)
        folders.append(folder)
    names = sorted(p.name for p in folders[0].iterdir())
    assert len(names) == 8 and names == sorted(p.name for p in folders[1].iterdir())
    differ = [n for n in names if (folders[0] / n).read_bytes() != (folders[1] / n).read_bytes()]
    assert not differ, f"trained differently in two processes: {differ}"


def naive_bpe(words: Counter, size: int) -> list[tuple[str, str]]:
    """BPE as the paper states it: recount every pair after every merge; ties to the smallest pair."""
    symbols = {w: list(w) for w in words}
    known = set(SPECIALS) | {c for w in words for c in w}
    merges: list[tuple[str, str]] = []
    while len(known) < size:
        counts: Counter = Counter()
        for w, n in words.items():
            counts.update({p: 0 for p in zip(symbols[w], symbols[w][1:])})
            for p in zip(symbols[w], symbols[w][1:]):
                counts[p] += n
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], p))
        merges.append((a, b))
        known.add(a + b)
        for w in words:
            s, out, j = symbols[w], [], 0
            while j < len(s):
                if j + 1 < len(s) and (s[j], s[j + 1]) == (a, b):
                    out.append(a + b)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            symbols[w] = out
    return merges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_bpe_equals_recounting_every_pair(seed):
    """The trainer's incremental pair counts (runs of one letter, one symbol merged two ways) give exactly the
    merges of recounting every pair after every merge."""
    rng = random.Random(seed)
    words = Counter("".join(rng.choice("aab") for _ in range(rng.randint(1, 8))) for _ in range(300))
    vocab, merges = _bpe(words, 40, "", "")
    assert merges == naive_bpe(words, 40) and len(merges) > 10
    assert len(vocab) == 40 and list(vocab)[:4] == SPECIALS


def test_tie_break_is_by_text_not_by_input_order():
    """Two pairs as frequent as each other: the smaller one merges first, whichever text came first."""
    first = train_reversible_tokenizer(["xy xy", "ab ab"], 4 + 5 + 1, "bpe")  # specials, ▁ a b x y: one merge
    second = train_reversible_tokenizer(["ab ab", "xy xy"], 4 + 5 + 1, "bpe")
    assert first.to_str() == second.to_str()  # (a, b) < (x, y) < (▁, a) < (▁, x), all counted twice
    assert first.encode("ab").tokens == ["▁", "ab"] and first.encode("xy").tokens == ["▁", "x", "y"]
