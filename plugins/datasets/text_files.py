"""``text_files``: your own classification data from CSV, TSV or JSON Lines files, with column mapping.

    task:
      name: classification
      dataset: text_files
      data_dir: data/trec             # file paths below are relative to it
      dataset_options:
        train: train.csv              # gzip or not
        test: test.csv                # or test_size: 500 (a count) / 0.1 (a fraction), carved from train
        validation_size: 0.1          # validation carved from train when there is no validation file
        text: [title, body]           # one column, or several joined with a space
        label: category
        encoding: utf-8               # e.g. latin-1

CSV and TSV files start with a header row naming the columns. CSV fields may be quoted ("a, b"); TSV fields
are taken as they are (a tab separates, nothing is quoted). The format is told by the file name (.csv, .tsv,
.jsonl/.json, optionally .gz) unless ``format`` says it. A row with a missing or extra field, a JSON line that
does not parse, or an empty text or label is an error naming the file and line. The split options are those of
every generic loader (:class:`nlpkit.data.loading.SplitOptions`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Literal

import nlpkit
from nlpkit.data.loading import FileDataset, SplitOptions, open_text
from nlpkit.errors import NlpkitError, did_you_mean


class TextFilesOptions(SplitOptions):
    text: str | list[str] = "text"
    label: str = "label"
    format: Literal["auto", "csv", "tsv", "jsonl"] = "auto"


def file_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    name = path.name.lower().removesuffix(".gz")
    for suffix, kind in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if name.endswith(suffix):
            return kind
    raise NlpkitError(f"{path}: cannot tell the format from the name (.csv, .tsv, .jsonl); set dataset_options."
                      "format: csv, tsv or jsonl")


def read_rows(path: Path, kind: str, encoding: str = "utf-8") -> list[tuple[int, dict]]:
    """(line, row) for every data row of a CSV/TSV file with a header, or of a JSON Lines file."""
    rows: list[tuple[int, dict]] = []
    with open_text(path, encoding) as f:
        if kind == "jsonl":
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise f.error(f"not a JSON object ({err.msg} at column {err.colno})") from None
                if not isinstance(row, dict):
                    raise f.error(f"expected a JSON object ({{\"column\": value, ...}}), got {type(row).__name__}")
                rows.append((f.line, row))
            return rows
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
        reader = csv.reader(f, strict=True, **dialect)
        try:
            header: list[str] | None = None
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue
                start = f.line - reader_lines(fields) + 1  # a quoted field may span lines
                if header is None:
                    header = [h.strip() for h in fields]
                    continue
                if len(fields) != len(header):
                    sep = "tab" if kind == "tsv" else "comma"
                    raise f.error(f"{len(fields)} field(s), but the header row names {len(header)} "
                                  f"({', '.join(header)}); a stray or missing {sep}?", start)
                rows.append((start, dict(zip(header, fields))))
        except csv.Error as err:
            raise f.error(f"malformed {kind.upper()} ({err})") from None
    return rows


def reader_lines(fields: list[str]) -> int:
    """Lines a CSV record spans (its quoted fields may hold line breaks)."""
    return 1 + sum(field.count("\n") for field in fields)


class TextFiles(FileDataset):
    name = "text_files"
    kind = "classification"
    Options = TextFilesOptions

    def read(self, path: Path) -> list[dict]:
        o = self.options
        rows = read_rows(path, file_format(path, o.format), o.encoding)
        columns = [o.text] if isinstance(o.text, str) else list(o.text)
        records = []
        for line, row in rows:
            for col in [*columns, o.label]:
                if col not in row:
                    raise NlpkitError(f"{path}, line {line}: no column '{col}'.{did_you_mean(col, row)} "
                                      f"Columns: {', '.join(row)}")
            text = " ".join(str(row[c]) for c in columns if row[c] is not None).strip()
            label = "" if row[o.label] is None else str(row[o.label]).strip()
            if not text or not label:
                raise NlpkitError(f"{path}, line {line}: empty {'text' if not text else 'label'} "
                                  f"(column '{', '.join(columns) if not text else o.label}')")
            records.append({"text": text, "label": label, "where": f"{path}, line {line}"})
        return records


@nlpkit.hookimpl
def register_datasets(register):
    register(TextFiles)
