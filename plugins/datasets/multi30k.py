"""``multi30k``: Multi30k Task 1 (Elliott et al., 2016): 31k image descriptions in English and German.

Reads the original files (``train``, ``val``, ``test_2016_flickr`` ``.en``/``.de``, gzip or not) from the
local folder ($NLPKIT_DATA/multi30k or the recipe's ``data_dir``), else the hub's copy. The translation
direction is chosen with ``source``/``target`` (en -> de by default; de -> en works the same way).
"""

from __future__ import annotations

from typing import Literal

from nlpkit_plugins.datasets.parallel_files import hub_pairs, read_line_aligned

import nlpkit
from nlpkit.contract import Dataset, Options
from nlpkit.data.loading import find_file, hub_unavailable
from nlpkit.errors import NlpkitError

FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}


class Multi30kOptions(Options):
    source: Literal["en", "de"] = "en"
    target: Literal["en", "de"] = "de"
    hub_id: str = "bentrevett/multi30k"


class Multi30k(Dataset):
    name = "multi30k"
    kind = "seq2seq"
    Options = Multi30kOptions

    def load(self, split: str) -> list[dict]:
        o = self.options
        if o.source == o.target:
            raise NlpkitError(f"multi30k: source and target are both '{o.source}'")
        if self.data_dir is None:
            return self._hub(split)
        stem = FILES[split]
        src, tgt = find_file(self.data_dir, f"{stem}.{o.source}"), find_file(self.data_dir, f"{stem}.{o.target}")
        if src is None or tgt is None:
            raise NlpkitError(f"No {stem}.{o.source}(.gz) and {stem}.{o.target}(.gz) in {self.data_dir}")
        return read_line_aligned(src, tgt)

    def _hub(self, split: str) -> list[dict]:
        try:
            from datasets import load_dataset

            ds = load_dataset(self.options.hub_id, split=split)
        except Exception as err:  # offline
            raise hub_unavailable(self.name, self.options.hub_id, err) from err
        return hub_pairs(ds, self.options.source, self.options.target, where=f"{self.options.hub_id} ({split})")


@nlpkit.hookimpl
def register_datasets(register):
    register(Multi30k)
