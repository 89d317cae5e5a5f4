"""``parallel_files``: your own translation data: line-aligned files, tab-separated pairs, or a hub dataset.

    task:
      name: translation
      dataset: parallel_files
      data_dir: data/my_pairs       # file paths below are relative to it
      dataset_options:
        source: en                  # language codes: file suffixes / hub columns
        target: de
        train: train                # a prefix: train.en + train.de (gzip or not) ...
        test: test.tsv              # ... or a file of "source<TAB>target" lines; or test_size: 2000 / 0.05
        test_references: [test.de.2, test.de.3]   # optional: more references, line-aligned with the test source
        # hub_id: bentrevett/multi30k   (instead of files: a Hugging Face dataset)

Line *i* of one side is the translation of line *i* of the other, so a line-count mismatch or a line
empty on one side only is an error naming both files and the line: training on shifted pairs fails silently.
A tab-separated file may hold more references in its third and later columns (``extra_columns: references``;
by default they are ignored). Validation and test sets carved from train are grouped by source sentence, so
a source never appears in two splits. The split options are those of every generic loader
(:class:`nlpkit.data.loading.SplitOptions`); ``validation_size`` defaults to 1000 pairs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import nlpkit
from nlpkit.data.loading import FileDataset, SplitOptions, find_file, hub_unavailable, no_examples, read_lines
from nlpkit.errors import NlpkitError


class ParallelFilesOptions(SplitOptions):
    source: str = "en"
    target: str = "de"
    validation_size: int | float = 1000  # validation is decoded every evaluation: a count, not a share of a corpus
    test_references: list[str] = []  # more reference files for the test split, line-aligned with its source
    extra_columns: Literal["ignore", "references"] = "ignore"  # a pair file's third and later columns
    hub_id: str | None = None
    hub_config: str | None = None
    source_column: str | None = None  # hub datasets with two text columns; default: the language codes
    target_column: str | None = None


def read_line_aligned(source_path: Path, target_path: Path, encoding: str = "utf-8") -> list[dict]:
    """Pairs from two line-aligned files; blank on both sides is skipped, blank on one side is an error."""
    src, tgt = read_lines(source_path, encoding), read_lines(target_path, encoding)
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
    if not records:
        raise no_examples(source_path, "sentence pairs")
    return records


def read_pair_file(path: Path, encoding: str = "utf-8", references: bool = False) -> list[dict]:
    """Pairs from ``source<TAB>target`` lines; with ``references``, the non-empty third and later columns are
    more references (``references``: every reference, ``target`` first), else they are ignored."""
    records = []
    for n, line in enumerate(read_lines(path, encoding), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            raise NlpkitError(f"{path}, line {n}: expected 'source<TAB>target', got {line[:80]!r}")
        record = {"source": parts[0], "target": parts[1], "where": f"{path}, line {n}"}
        if references:
            record["references"] = [parts[1], *(p for p in parts[2:] if p.strip())]
        records.append(record)
    if not records:
        raise no_examples(path, "sentence pairs")
    return records


def read_parallel(location: str | Path, source: str, target: str, encoding: str = "utf-8",
                  references: bool = False) -> list[dict]:
    """A pair file (.tsv/.txt, gzip or not) or a prefix naming ``<prefix>.<source>`` and ``<prefix>.<target>``."""
    path = Path(location).expanduser()
    if path.is_file():
        return read_pair_file(path, encoding, references)
    src, tgt = find_file(path.parent, f"{path.name}.{source}"), find_file(path.parent, f"{path.name}.{target}")
    if src is None or tgt is None:
        raise NlpkitError(f"No parallel data at {path}: expected a 'source<TAB>target' file, or "
                          f"{path}.{source} and {path}.{target} (optionally .gz)")
    return read_line_aligned(src, tgt, encoding)


def add_references(records: list[dict], files: list[Path], encoding: str = "utf-8") -> list[dict]:
    """Give each pair the references of ``files`` (one per line, line-aligned with the pairs' source file):
    ``references`` lists every reference, the pair's own target first. An empty line adds none for its pair."""
    for path in files:
        lines = read_lines(path, encoding)
        numbers = [int(r["where"].rsplit("line ", 1)[1]) for r in records]
        if len(lines) < max(numbers, default=0):
            raise NlpkitError(f"{path}: {len(lines)} lines, but the test pairs run to line {max(numbers)}; a "
                              "reference file holds one reference per line of the test source")
        for record, n in zip(records, numbers):
            extra = lines[n - 1].strip()
            record["references"] = record.get("references", [record["target"]]) + ([extra] if extra else [])
    return records


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


class ParallelFiles(FileDataset):
    name = "parallel_files"
    kind = "seq2seq"
    Options = ParallelFilesOptions

    def load(self, split: str) -> list[dict]:
        o = self.options
        if o.hub_id:
            return self._hub(split)
        records = super().load(split)
        if split == "test" and o.test_references:
            if o.test is None:
                raise NlpkitError("dataset_options.test_references: more references need a test file of their own "
                                  "(they are line-aligned with it), not a test set carved from train")
            records = add_references([dict(r) for r in records], [self.resolve(f) for f in o.test_references],
                                     o.encoding)
        return records

    def read(self, path: Path) -> list[dict]:
        o = self.options
        return read_parallel(path, o.source, o.target, o.encoding, o.extra_columns == "references")

    def group_key(self, record: dict) -> str:
        return record["source"].strip()

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
