"""Where data lives, how to read it, and how the generic file loaders split it. Nothing here knows a task.

A dataset's local folder is the recipe's ``data_dir`` or ``$NLPKIT_DATA/<dataset name>``.

Every data file is read through :func:`open_text`, built-in loaders included, so every loader answers a bad file
the same way: bytes that are not text in the chosen encoding, a binary file, a truncated or corrupt gzip, a
missing file, each as an :class:`NlpkitError` naming the file and the line, never a traceback.

The generic loaders (``text_files``, ``conll_files``, ``parallel_files``) share one set of split options
(:class:`SplitOptions`) and one splitting mechanism (:class:`FileDataset`): file paths relative to ``data_dir``,
``validation_size``/``test_size`` as a count or a fraction carved from train (seeded, grouped by a key so a
sentence never lands in two splits), and an ``encoding``. Written once here, they behave the same in all three.
"""

from __future__ import annotations

import codecs
import gzip
import os
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from nlpkit.contract import Dataset, Options
from nlpkit.errors import NlpkitError

SPLITS = ("train", "validation", "test")
# Encodings whose bytes are not ASCII-compatible: a line cannot be found by its b"\n" byte, and NUL bytes are text.
_WIDE = {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"}


def data_dir(dataset: str, explicit: str | Path | None = None) -> Path | None:
    """The local folder for ``dataset``: the explicit path if given, else $NLPKIT_DATA/<dataset>, else None."""
    if explicit:
        if "$NLPKIT_DATA" in str(explicit) and not os.environ.get("NLPKIT_DATA"):
            raise NlpkitError(f"data_dir '{explicit}' uses $NLPKIT_DATA, which is not set: "
                              "set it to the folder that holds your datasets")
        path = Path(os.path.expandvars(str(explicit))).expanduser()
        if not path.exists():
            raise NlpkitError(f"Data folder for '{dataset}' not found: {path}")
        return path
    root = os.environ.get("NLPKIT_DATA")
    if root and (Path(root).expanduser() / dataset).exists():
        return Path(root).expanduser() / dataset
    return None


def find_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` inside ``folder``."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def check_encoding(encoding: str) -> str:
    """The codec's canonical name, or an error naming the option (a typo would otherwise fail mid-file)."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise NlpkitError(f"Unknown text encoding '{encoding}' (e.g. utf-8, latin-1, cp1252, utf-16)") from None


class TextLines:
    """The lines of a text file, gzip-compressed or not (told by its magic bytes, not its name), each with its
    line ending, as ``open(..., newline="")`` gives them (``csv.reader`` accepts this object).

    Lines are decoded one at a time, so a byte that is not text in ``encoding`` is reported with its file, line
    and column; a NUL byte means a binary file; a gzip stream that ends early or is corrupt is named as such.
    ``line`` is the number of the line last read (1-based). Use as a context manager."""

    def __init__(self, path: str | Path, encoding: str = "utf-8"):
        self.path = Path(path)
        self.encoding = check_encoding(encoding)
        self.line = 0
        self._file, self._raw = _open_binary(self.path)

    def __enter__(self) -> TextLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()
        self._file.close()

    def __iter__(self) -> Iterator[str]:
        if self.encoding in _WIDE:
            yield from self._wide_lines()
            return
        while True:
            try:
                raw = self._raw.readline()
            except (EOFError, zlib.error, gzip.BadGzipFile) as err:
                raise self.error(f"the gzip data is truncated or corrupt ({err}); the file was cut short while "
                                 "copying or compressing: re-create it", self.line + 1) from None
            except OSError as err:
                raise self.error(f"could not be read: {err.strerror or err}", self.line + 1) from None
            if not raw:
                return
            self.line += 1
            yield self._decode(raw)

    def _decode(self, raw: bytes) -> str:
        if b"\x00" in raw:
            raise self.error("a NUL byte: this is a binary file, not a text file (a compressed archive other than "
                             "gzip, a spreadsheet, a model file?)", self.line)
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as err:
            bad = raw[err.start:err.start + 1].hex()
            column = len(raw[:err.start].decode(self.encoding, errors="replace")) + 1
            raise self.error(f"byte 0x{bad} (column {column}) is not valid {self.encoding} text; convert the file, "
                             "or give its encoding (e.g. 'encoding: latin-1' in dataset_options, where the dataset "
                             "takes one)", self.line) from None
        return text[1:] if self.line == 1 and text.startswith("\ufeff") else text  # a byte-order mark is no text

    def _wide_lines(self) -> Iterator[str]:
        """UTF-16/32: the whole file decoded at once (its bytes hold NULs and no b"\\n" line breaks)."""
        try:
            text = self._raw.read().decode(self.encoding)
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise self.error(f"the gzip data is truncated or corrupt ({err})", None) from None
        except UnicodeDecodeError as err:
            raise self.error(f"byte {err.start} is not valid {self.encoding} text", None) from None
        for line in text.lstrip("\ufeff").splitlines(keepends=True):
            self.line += 1
            yield line

    def error(self, what: str, line: int | None = None) -> NlpkitError:
        """An error about this file (at ``line``, default: the line last read)."""
        line = self.line if line is None else line
        return NlpkitError(f"{self.path}{f', line {line}' if line else ''}: {what}")


def _open_binary(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(the file, the stream to read: the file itself or its gzip decompressor)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise NlpkitError(f"Data file not found: {path}") from None
    except IsADirectoryError:
        raise NlpkitError(f"{path}: a folder, where a data file was expected") from None
    except OSError as err:
        raise NlpkitError(f"{path}: could not be opened: {err.strerror or err}") from None
    gz = f.read(2) == b"\x1f\x8b"
    f.seek(0)
    return f, (gzip.GzipFile(fileobj=f, mode="rb") if gz else f)  # type: ignore[return-value]


def open_text(path: str | Path, encoding: str = "utf-8") -> TextLines:
    """Open a data file for reading lines: see :class:`TextLines`. Every loader reads its files through this."""
    return TextLines(path, encoding)


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """Every line of a text file without its line ending."""
    with open_text(path, encoding) as f:
        return [line.rstrip("\r\n") for line in f]


def no_examples(path: str | Path, what: str = "examples") -> NlpkitError:
    """The error for a file that holds no examples: it names the file (an empty split is otherwise a puzzle)."""
    return NlpkitError(f"{path}: no {what} in this file (empty, or only blank lines?)")


def hub_unavailable(dataset: str, hub_id: str, err: Exception) -> NlpkitError:
    return NlpkitError(
        f"Could not load '{hub_id}' from the Hugging Face hub for dataset '{dataset}' ({type(err).__name__}: {err}).\n"
        f"Offline? Point nlpkit at a local copy: set NLPKIT_DATA to a folder containing '{dataset}/', "
        f"or give 'data_dir' in the recipe's task entry."
    )


# ---------------------------------------------------------------- the generic loaders' splits


class SplitOptions(Options):
    """The split options every generic file loader takes, with one meaning in all of them."""

    train: str | None = None  # a path, relative to the task entry's data_dir (else the working directory)
    validation: str | None = None  # default: carved from train (validation_size)
    test: str | None = None  # default: carved from train (test_size)
    validation_size: int | float = 0.1  # examples (an integer) or a fraction of train (0 < x < 1)
    test_size: int | float | None = None  # the same, for a data set without a test file
    split_seed: int = 0  # the shuffle that carves validation/test from train: fixed, so every run sees one split
    encoding: str = "utf-8"  # the files' text encoding, e.g. latin-1, cp1252, utf-16


def carve_size(size: int | float, total: int, option: str) -> int:
    """How many of ``total`` examples a ``*_size`` option asks for: an integer is a count, a float a fraction."""
    if isinstance(size, bool) or size < 0:
        raise NlpkitError(f"dataset_options.{option}: {size!r} is not a count (an integer >= 0) or a fraction")
    if isinstance(size, float):
        if size >= 1:
            raise NlpkitError(f"dataset_options.{option}: {size} is read as a fraction of train and must be below 1; "
                              f"give a count as an integer (e.g. {int(size)})")
        return round(total * size)
    return int(size)


def carve(records: list[dict], sizes: dict[str, int], seed: int, key: Any = None) -> dict[str, list[dict]]:
    """Split ``records`` into the splits named in ``sizes`` (example counts) and "train" (the rest).

    Records are carved by group (``key(record)``, e.g. the source sentence): a group goes whole to one split, so
    validation and test never share one with each other or with train. Groups are shuffled with ``seed``; each
    carved split takes groups until it holds at least its count. File order is kept within every split."""
    key = key or (lambda r: id(r))
    groups: dict[Any, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(key(record), []).append(i)
    order = list(groups)
    random.Random(seed).shuffle(order)
    where: dict[int, str] = {}
    queue = iter(order)
    for split, wanted in sizes.items():
        taken = 0
        while taken < wanted:
            group = next(queue, None)
            if group is None:
                break
            for i in groups[group]:
                where[i] = split
            taken += len(groups[group])
    out: dict[str, list[dict]] = {"train": [], **{s: [] for s in sizes}}
    for i, record in enumerate(records):
        out[where.get(i, "train")].append(record)
    return out


class FileDataset(Dataset):
    """Base of the generic file loaders: the split logic of :class:`SplitOptions`, written once.

    A subclass reads one file (:meth:`read`: records with a ``where``) and may name the key that keeps related
    records in one split (:meth:`group_key`; default: the record's input text)."""

    Options = SplitOptions

    def __init__(self, options: Options | None = None, data_dir: Path | None = None):
        super().__init__(options, data_dir)
        self._cache: dict[str, dict[str, list[dict]]] = {}

    def read(self, path: Path) -> list[dict]:
        raise NotImplementedError

    def group_key(self, record: dict) -> Any:
        """Records with one key stay in one split (default: the same input text)."""
        return record.get("text", record.get("source", tuple(record.get("tokens", ())) or id(record)))

    def resolve(self, name: str) -> Path:
        """A data file's path: absolute as given; relative to data_dir (when given), else to the working directory."""
        path = Path(os.path.expandvars(name)).expanduser()
        if path.is_absolute():
            return path
        if self.data_dir is not None:
            return Path(self.data_dir) / path
        return path

    def file_for(self, split: str) -> str | None:
        return getattr(self.options, split)

    def load(self, split: str) -> list[dict]:
        o = self.options
        if split not in SPLITS:
            raise NlpkitError(f"dataset '{self.name}': no split '{split}' (splits: {', '.join(SPLITS)})")
        if self.file_for("train") is None:
            raise NlpkitError(f"dataset '{self.name}' needs dataset_options.train (a file path)")
        if self.file_for("test") is None and o.test_size is None:
            raise NlpkitError(f"dataset '{self.name}' needs dataset_options.test (a file path), or test_size to "
                              "carve a test set from train")
        if split != "train" and self.file_for(split) is not None:
            return self._read(split)
        return self._carved()[split]

    def _read(self, split: str) -> list[dict]:
        path = self.resolve(self.file_for(split))
        records = self.read(path)
        if not records:
            raise no_examples(path, f"examples for the {split} split")
        return records

    def _carved(self) -> dict[str, list[dict]]:
        """Train, and the splits without a file of their own carved from it (read and carved once)."""
        if "carved" not in self._cache:
            o = self.options
            records = self._read("train")
            wanted = {"test": ("test_size", o.test_size), "validation": ("validation_size", o.validation_size)}
            sizes = {s: carve_size(size, len(records), option) for s, (option, size) in wanted.items()
                     if self.file_for(s) is None}
            out = carve(records, sizes, o.split_seed, self.group_key)
            source = self.resolve(self.file_for("train"))
            for split, got in out.items():
                if not got:
                    option = f"{split}_size" if split != "train" else "validation_size/test_size"
                    raise NlpkitError(f"{source}: the {split} split carved from this file ({len(records)} examples) "
                                      f"is empty; check dataset_options.{option}")
            self._cache["carved"] = out
        return self._cache["carved"]


def subset(examples: list[Any], limit: int | None, seed: int, how: str = "random") -> list[Any]:
    """At most ``limit`` of ``examples``: a random sample drawn with ``seed`` (in file order), or with
    ``how="head"`` the first ``limit``. A sample, because files are often sorted (by length, by label, by date),
    and their head is then no picture of the whole."""
    if limit is None or limit >= len(examples):
        return examples
    if how == "head":
        return examples[:limit]
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]
