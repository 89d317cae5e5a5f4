"""``conll2003``: CoNLL-2003 English NER (Tjong Kim Sang & De Meulder, 2003): PER, LOC, ORG, MISC.

Reads the original files ``eng.train``/``eng.testa``/``eng.testb`` (gzip or not; ``word POS chunk NER``,
tags in IOB1) from the local folder (``$NLPKIT_DATA/conll2003`` or the recipe's ``data_dir``); testa is
the validation split and testb the test split, as in the shared task. Without a local folder it loads the
hub's copy (IOB2). Either way the ``ner`` task normalises the tags to one scheme.
"""

from __future__ import annotations

from nlpkit_plugins.datasets.conll_files import read_conll, read_hub_tagging

import nlpkit
from nlpkit.contract import Dataset, Options
from nlpkit.data.loading import find_file
from nlpkit.errors import NlpkitError

FILES = {"train": "eng.train", "validation": "eng.testa", "test": "eng.testb"}
TYPES = ["PER", "LOC", "ORG", "MISC"]


class Conll2003Options(Options):
    hub_id: str = "conll2003"


class Conll2003(Dataset):
    name = "conll2003"
    kind = "tagging"
    Options = Conll2003Options

    def labels(self) -> list[str]:
        return ["O"] + [f"{p}-{t}" for t in TYPES for p in ("B", "I")]

    def load(self, split: str) -> list[dict]:
        if self.data_dir is None:
            return read_hub_tagging(self.options.hub_id, split, self.name)
        path = find_file(self.data_dir, FILES[split])
        if path is None:
            raise NlpkitError(f"No {FILES[split]}(.gz) in {self.data_dir} (CoNLL-2003 {split} split)")
        return read_conll(path, tag_column=-1)


@nlpkit.hookimpl
def register_datasets(register):
    register(Conll2003)
