"""``conll_files``: your own tagging data in CoNLL-style column files, or a hub dataset with token/tag columns.

    task:
      name: ner
      dataset: conll_files
      data_dir: data/my_ner          # file paths below are relative to it
      dataset_options:
        train: train.txt             # one token per line, columns split by whitespace; gzip or not
        validation: dev.txt          # optional: carved from train (validation_size) when not given
        test: test.txt               # or test_size: a count or a fraction carved from train
        tag_column: -1               # any column (0-based; -1 = the last)
        encoding: utf-8              # e.g. latin-1

A blank line ends a sentence and ``-DOCSTART-`` lines are skipped. Tags stay strings in any scheme
(IOB1, IOB2/BIO, BIOES): the ``ner`` task normalises them. The split options are those of every generic
loader (:class:`nlpkit.data.loading.SplitOptions`). ``hub_id: <name>`` reads a Hugging Face dataset with
``tokens``/``ner_tags`` columns instead of files.
"""

from __future__ import annotations

from pathlib import Path

import nlpkit
from nlpkit.data.loading import FileDataset, SplitOptions, hub_unavailable, no_examples, open_text
from nlpkit.errors import NlpkitError


def read_conll(path: Path, tag_column: int = -1, token_column: int = 0, encoding: str = "utf-8") -> list[dict]:
    """Sentences of a column file as ``{"tokens", "tags", "where"}``; ``where`` is the first token's line.
    A file without a sentence is an error naming it."""
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = width = 0

    def end_sentence() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags, "where": f"{path}, line {first}"})
        tokens, tags = [], []

    with open_text(path, encoding) as f:
        for line_no, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                end_sentence()
                continue
            if cols[0] == "-DOCSTART-":
                end_sentence()
                continue
            width = width or len(cols)  # the first token line sets the file's column count
            indices = {i % len(cols) if -len(cols) <= i < len(cols) else None for i in (token_column, tag_column)}
            if None in indices or len(indices) < 2:
                raise NlpkitError(
                    f"{path}, line {line_no}: expected a token in column {token_column} and a tag in column "
                    f"{tag_column}; the line has {len(cols)} column(s): {line.strip()[:80]!r}")
            if len(cols) != width:
                raise NlpkitError(f"{path}, line {line_no}: {len(cols)} column(s), but the file's first token line "
                                  f"has {width}: {line.strip()[:80]!r} (a missing or extra column?)")
            token, tag = cols[token_column], cols[tag_column]
            if not tokens:
                first = line_no
            tokens.append(token)
            tags.append(tag)
    end_sentence()
    if not sentences:
        raise no_examples(path, "sentences")
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


class ConllFilesOptions(SplitOptions):
    tag_column: int = -1
    token_column: int = 0
    hub_id: str | None = None  # read this hub dataset instead of files
    tokens_field: str = "tokens"
    tags_field: str = "ner_tags"


class ConllFiles(FileDataset):
    name = "conll_files"
    kind = "tagging"
    Options = ConllFilesOptions

    def load(self, split: str) -> list[dict]:
        o = self.options
        if o.hub_id:
            return read_hub_tagging(o.hub_id, split, self.name, o.tokens_field, o.tags_field)
        return super().load(split)

    def read(self, path: Path) -> list[dict]:
        return read_conll(path, self.options.tag_column, self.options.token_column, self.options.encoding)

    def group_key(self, record: dict) -> tuple[str, ...]:
        return tuple(record["tokens"])


@nlpkit.hookimpl
def register_datasets(register):
    register(ConllFiles)
