"""``text_files``: your own classification data from CSV, TSV or JSON Lines files, with column mapping.

    task:
      name: classification
      dataset: text_files
      dataset_options:
        train: data/train.csv       # validation is carved from train when not given
        test: data/test.csv
        text: [title, body]         # one column, or several joined with a space
        label: category
"""

from __future__ import annotations

import random

import nlpkit
from nlpkit.contract import Dataset, Options
from nlpkit.errors import NlpkitError, did_you_mean


class TextFilesOptions(Options):
    train: str
    validation: str | None = None
    test: str
    text: str | list[str] = "text"
    label: str = "label"
    validation_size: float = 0.1


class TextFiles(Dataset):
    name = "text_files"
    kind = "classification"
    Options = TextFilesOptions

    def load(self, split: str) -> list[dict]:
        path = getattr(self.options, split)
        if split != "test" and self.options.validation is None:
            rows = self._read(self.options.train)
            order = list(range(len(rows)))
            random.Random(0).shuffle(order)
            held = set(order[: int(len(rows) * self.options.validation_size)])
            return [r for i, r in enumerate(rows) if (i in held) == (split == "validation")]
        return self._read(path)

    def _read(self, path: str) -> list[dict]:
        from datasets import load_dataset

        kind = "json" if path.endswith((".jsonl", ".json", ".jsonl.gz")) else "csv"
        extra = {"delimiter": "\t"} if path.endswith((".tsv", ".tsv.gz")) else {}
        try:
            ds = load_dataset(kind, data_files=path, split="train", **extra)
        except FileNotFoundError as err:
            raise NlpkitError(f"Data file not found: {path}") from err
        columns = [self.options.text] if isinstance(self.options.text, str) else list(self.options.text)
        for col in [*columns, self.options.label]:
            if col not in ds.column_names:
                raise NlpkitError(f"{path}: no column '{col}'.{did_you_mean(col, ds.column_names)} "
                                  f"Columns: {', '.join(ds.column_names)}")
        return [
            {"text": " ".join(str(r[c]) for c in columns), "label": str(r[self.options.label]),
             "where": f"{path}, row {i + 1}"}
            for i, r in enumerate(ds)
        ]


@nlpkit.hookimpl
def register_datasets(register):
    register(TextFiles)
