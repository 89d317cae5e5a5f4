"""``parallel_files``: your own translation data: line-aligned files, tab-separated pairs, or a hub dataset.

    task:
      name: translation
      dataset: parallel_files
      dataset_options:
        source: en                  # language codes: file suffixes / hub columns
        target: de
        train: data/train           # a prefix: data/train.en + data/train.de (gzip or not) ...
        test: data/test.tsv         # ... or a file of "source<TAB>target" lines
        # hub_id: bentrevett/multi30k   (instead of files: a Hugging Face dataset)

Line *i* of one side is the translation of line *i* of the other, so a line-count mismatch or a line
empty on one side only is an error naming both files and the line: training on shifted pairs fails silently.
"""

from __future__ import annotations

import random
from pathlib import Path

import nlpkit
from nlpkit.contract import Dataset, Options
from nlpkit.data import find_file, hub_unavailable, open_text
from nlpkit.errors import NlpkitError


class ParallelFilesOptions(Options):
    source: str = "en"
    target: str = "de"
    train: str | None = None
    validation: str | None = None  # default: carved from train (validation_size pairs)
    test: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    source_column: str | None = None  # hub datasets with two text columns; default: the language codes
    target_column: str | None = None
    validation_size: int = 1000


def _lines(path: Path) -> list[str]:
    with open_text(path) as f:
        return [line.rstrip("\r\n") for line in f]


def read_line_aligned(source_path: Path, target_path: Path) -> list[dict]:
    """Pairs from two line-aligned files; blank on both sides is skipped, blank on one side is an error."""
    src, tgt = _lines(source_path), _lines(target_path)
    while src and tgt and not src[-1].strip() and not tgt[-1].strip():  # trailing blank lines
        src.pop(), tgt.pop()
    if len(src) != len(tgt):
        raise NlpkitError(f"Parallel files differ in length: {source_path} has {len(src)} lines, "
                          f"{target_path} has {len(tgt)}; line i of one must translate line i of the other")
    records = []
    for n, (s, t) in enumerate(zip(src, tgt), 1):
        if not s.strip() and not t.strip():
            continue
        if not s.strip() or not t.strip():
            empty, other = (source_path, target_path) if not s.strip() else (target_path, source_path)
            raise NlpkitError(f"{empty}, line {n}: empty, but line {n} of {other} is not (misaligned files?)")
        records.append({"source": s, "target": t, "where": f"{source_path} / {target_path}, line {n}"})
    return records


def read_pair_file(path: Path) -> list[dict]:
    """Pairs from ``source<TAB>target`` lines (extra columns are ignored)."""
    records = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            raise NlpkitError(f"{path}, line {n}: expected 'source<TAB>target', got {line[:80]!r}")
        records.append({"source": parts[0], "target": parts[1], "where": f"{path}, line {n}"})
    return records


def read_parallel(location: str | Path, source: str, target: str) -> list[dict]:
    """A pair file (.tsv/.txt, gzip or not) or a prefix naming ``<prefix>.<source>`` and ``<prefix>.<target>``."""
    path = Path(location).expanduser()
    if path.is_file():
        return read_pair_file(path)
    src, tgt = find_file(path.parent, f"{path.name}.{source}"), find_file(path.parent, f"{path.name}.{target}")
    if src is None or tgt is None:
        raise NlpkitError(f"No parallel data at {path}: expected a 'source<TAB>target' file, or "
                          f"{path}.{source} and {path}.{target} (optionally .gz)")
    return read_line_aligned(src, tgt)


def hub_pairs(rows, source: str, target: str, source_column: str | None = None,
              target_column: str | None = None, where: str = "hub") -> list[dict]:
    """Pairs from hub rows: a ``translation`` dict column keyed by language, or two text columns."""
    out = []
    for n, row in enumerate(rows):
        if "translation" in row and source_column is None:
            pair = row["translation"]
            s, t = pair.get(source), pair.get(target)
        else:
            scol, tcol = source_column or source, target_column or target
            if scol not in row or tcol not in row:
                raise NlpkitError(f"{where}: no columns '{scol}' and '{tcol}' (columns: {', '.join(row)}); "
                                  "set source_column / target_column")
            s, t = row[scol], row[tcol]
        if s is None or t is None:
            raise NlpkitError(f"{where}, row {n + 1}: no '{source}'/'{target}' text")
        out.append({"source": s, "target": t, "where": f"{where}, row {n + 1}"})
    return out


def carve(records: list[dict], split: str, size: int) -> list[dict]:
    """A fixed random validation set held out of train (seed 0), or the rest of train."""
    order = list(range(len(records)))
    random.Random(0).shuffle(order)
    held = set(order[:size])
    return [r for i, r in enumerate(records) if (i in held) == (split == "validation")]


class ParallelFiles(Dataset):
    name = "parallel_files"
    kind = "seq2seq"
    Options = ParallelFilesOptions

    def load(self, split: str) -> list[dict]:
        o = self.options
        if o.hub_id:
            return self._hub(split)
        if split == "validation" and o.validation is None:
            return carve(self._read("train"), split, o.validation_size)
        records = self._read(split)
        return carve(records, split, o.validation_size) if split == "train" and o.validation is None else records

    def _read(self, split: str) -> list[dict]:
        location = getattr(self.options, split)
        if location is None:
            raise NlpkitError(f"dataset_options.{split}: parallel_files needs a path for the {split} split")
        if self.data_dir is not None and not Path(location).is_absolute():
            location = self.data_dir / location
        return read_parallel(location, self.options.source, self.options.target)

    def _hub(self, split: str) -> list[dict]:
        o = self.options
        try:
            from datasets import load_dataset

            ds = load_dataset(o.hub_id, o.hub_config, split=split)
        except Exception as err:  # offline, or no such dataset/split
            raise hub_unavailable(self.name, o.hub_id, err) from err
        return hub_pairs(ds, o.source, o.target, o.source_column, o.target_column, f"{o.hub_id} ({split})")


@nlpkit.hookimpl
def register_datasets(register):
    register(ParallelFiles)
