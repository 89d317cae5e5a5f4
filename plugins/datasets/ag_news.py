"""``ag_news``: AG's News Topic Classification (Zhang et al., 2015): 4 topics, title + description.

Reads the original CSV format (no header; class index 1-4, title, description; gzip or not) from a
local folder holding ``train.csv``/``validation.csv``/``test.csv`` (a folder without a validation file
gets one carved from train), else loads the hub's ``ag_news``.
"""

from __future__ import annotations

import csv
import html
import random
import re
from pathlib import Path

import nlpkit
from nlpkit.contract import Dataset, Options
from nlpkit.data.loading import find_file, hub_unavailable, no_examples, open_text
from nlpkit.errors import NlpkitError

CLASSES = ["World", "Sports", "Business", "Sci/Tech"]


class AgNewsOptions(Options):
    hub_id: str = "ag_news"
    validation_size: int = 1000  # carved from train when the source has no validation split


# The published CSVs carry the leftovers of HTML the crawler half-decoded: entities whose '&' became a space
# (" quot;", " #39;": the space goes with it), whole ones ("&lt;"), backslash-escaped quotes and a lone
# backslash for a line break.
_BARE_ENTITY = re.compile(r"[& ]?((?<![A-Za-z])(?:quot|amp|lt|gt|apos)|#\d{1,5});")


def clean_text(text: str) -> str:
    """AG News text as it was written: entities decoded, escapes and line-break backslashes removed."""
    text = text.replace('\\"', '"').replace("\\", " ")
    text = _BARE_ENTITY.sub(lambda m: html.unescape(f"&{m.group(1)};"), text)
    return " ".join(html.unescape(text).split())


def read_agnews_csv(path: Path) -> list[dict]:
    records = []
    with open_text(path) as f:
        reader = csv.reader(f, strict=True)
        try:
            for row in reader:
                line = f.line - sum(part.count("\n") for part in row)  # where the record starts
                if not row:
                    continue
                if len(row) < 3 or not row[0].strip().isdigit() or not 1 <= int(row[0]) <= len(CLASSES):
                    raise NlpkitError(
                        f"{path}, line {line}: expected 'class index (1-4)', title, description; got {row[:3]}"
                    )
                text = clean_text(" ".join(part.strip() for part in row[1:]))
                records.append({"text": text, "label": CLASSES[int(row[0]) - 1], "where": f"{path}, line {line}"})
        except csv.Error as err:
            raise f.error(f"malformed CSV ({err})") from None
    if not records:
        raise no_examples(path)
    return records


class AgNews(Dataset):
    name = "ag_news"
    kind = "classification"
    Options = AgNewsOptions

    def labels(self) -> list[str]:
        return CLASSES

    def load(self, split: str) -> list[dict]:
        if self.data_dir is None:
            return self._hub("test") if split == "test" else self._carve(self._hub("train"), split)
        if split == "test" or find_file(self.data_dir, "validation.csv") is not None:
            path = find_file(self.data_dir, f"{split}.csv")
            if path is None:
                raise NlpkitError(f"No {split}.csv(.gz) in {self.data_dir}")
            return read_agnews_csv(path)
        train = find_file(self.data_dir, "train.csv")
        if train is None:
            raise NlpkitError(f"No train.csv(.gz) in {self.data_dir}")
        return self._carve(read_agnews_csv(train), split)

    def _carve(self, train: list[dict], split: str) -> list[dict]:
        order = list(range(len(train)))
        random.Random(0).shuffle(order)
        held = set(order[: self.options.validation_size])
        return [r for i, r in enumerate(train) if (i in held) == (split == "validation")]

    def _hub(self, split: str) -> list[dict]:
        try:
            from datasets import load_dataset

            ds = load_dataset(self.options.hub_id, split=split)
        except Exception as err:  # offline, or no such dataset
            raise hub_unavailable(self.name, self.options.hub_id, err) from err
        return [{"text": clean_text(r["text"]), "label": CLASSES[r["label"]]} for r in ds]


@nlpkit.hookimpl
def register_datasets(register):
    register(AgNews)
