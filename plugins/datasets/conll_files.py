"""``conll_files``: your own tagging data in CoNLL-style column files, or a hub dataset with token/tag columns.

    task:
      name: ner
      dataset: conll_files
      dataset_options:
        train: data/train.txt        # one token per line, columns split by whitespace; gzip or not
        validation: data/dev.txt     # optional: carved from train when not given
        test: data/test.txt
        tag_column: -1               # any column (0-based; -1 = the last)

A blank line ends a sentence and ``-DOCSTART-`` lines are skipped. Tags stay strings in any scheme
(IOB1, IOB2/BIO, BIOES): the ``ner`` task normalises them. Relative paths are looked up in the task's
``data_dir`` first, then in the working directory. ``hub_id: <name>`` reads a Hugging Face dataset with
``tokens``/``ner_tags`` columns instead of files.
"""

from __future__ import annotations

import random
from pathlib import Path

import nlpkit
from nlpkit.contract import Dataset, Options
from nlpkit.data import hub_unavailable, open_text
from nlpkit.errors import NlpkitError


def read_conll(path: Path, tag_column: int = -1, token_column: int = 0) -> list[dict]:
    """Sentences of a column file as ``{"tokens", "tags", "where"}``; ``where`` is the first token's line."""
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0

    def end_sentence() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags, "where": f"{path}, line {first}"})
        tokens, tags = [], []

    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                end_sentence()
                continue
            if cols[0] == "-DOCSTART-":
                end_sentence()
                continue
            try:
                token, tag = cols[token_column], cols[tag_column]
            except IndexError:
                raise NlpkitError(
                    f"{path}, line {line_no}: expected a token in column {token_column} and a tag in column "
                    f"{tag_column}; the line has {len(cols)} column(s): {line.strip()!r}"
                ) from None
            if not tokens:
                first = line_no
            tokens.append(token)
            tags.append(tag)
    end_sentence()
    return sentences


def read_hub_tagging(hub_id: str, split: str, dataset: str, tokens: str = "tokens", tags: str = "ner_tags",
                     **kwargs) -> list[dict]:
    """A hub dataset's split with a word-list column and a tag column (ClassLabel ids or strings)."""
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, split=split, **kwargs)
    except Exception as err:  # offline, or no such dataset
        raise hub_unavailable(dataset, hub_id, err) from err
    for col in (tokens, tags):
        if col not in ds.column_names:
            raise NlpkitError(f"Hub dataset '{hub_id}' has no column '{col}' (columns: {', '.join(ds.column_names)})")
    feature = getattr(ds.features[tags], "feature", None)
    names = getattr(feature, "names", None)
    return [
        {"tokens": list(r[tokens]), "tags": [names[t] if names else str(t) for t in r[tags]],
         "where": f"{hub_id} {split}, example {i + 1}"}
        for i, r in enumerate(ds) if r[tokens]
    ]


def carve(records: list[dict], split: str, size: float | int) -> list[dict]:
    """Split a held-out validation set off the training records (fixed seed, so every run agrees)."""
    order = list(range(len(records)))
    random.Random(0).shuffle(order)
    n = int(len(records) * size) if isinstance(size, float) and size < 1 else int(size)
    held = set(order[:n])
    return [r for i, r in enumerate(records) if (i in held) == (split == "validation")]


class ConllFilesOptions(Options):
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    tag_column: int = -1
    token_column: int = 0
    validation_size: float = 0.1  # fraction (or count, if >= 1) carved from train when there is no validation file
    hub_id: str | None = None  # read this hub dataset instead of files
    tokens_field: str = "tokens"
    tags_field: str = "ner_tags"


class ConllFiles(Dataset):
    name = "conll_files"
    kind = "tagging"
    Options = ConllFilesOptions

    def load(self, split: str) -> list[dict]:
        o = self.options
        if o.hub_id:
            return read_hub_tagging(o.hub_id, split, self.name, o.tokens_field, o.tags_field)
        if o.train is None or o.test is None:
            raise NlpkitError("dataset 'conll_files' needs dataset_options 'train' and 'test' (file paths) "
                              "or 'hub_id'")
        if split != "test" and o.validation is None:
            return carve(self._read(o.train), split, o.validation_size)
        return self._read(getattr(o, split))

    def _read(self, name: str) -> list[dict]:
        path = Path(name).expanduser()
        if not path.is_absolute() and self.data_dir is not None and (self.data_dir / path).exists():
            path = self.data_dir / path
        if not path.exists():
            raise NlpkitError(f"Data file not found: {path}")
        return read_conll(path, self.options.tag_column, self.options.token_column)


@nlpkit.hookimpl
def register_datasets(register):
    register(ConllFiles)
