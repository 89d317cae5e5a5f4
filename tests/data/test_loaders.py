"""One suite for the three generic loaders (text_files, conll_files, parallel_files): the same split options mean
the same thing in each, and every bad data file is answered with its file and line, built-in loaders included."""

from __future__ import annotations

import gzip
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from nlpkit_plugins.datasets.ag_news import read_agnews_csv
from nlpkit_plugins.datasets.conll_files import ConllFiles, read_conll
from nlpkit_plugins.datasets.parallel_files import ParallelFiles, read_line_aligned
from nlpkit_plugins.datasets.text_files import TextFiles

from nlpkit.data.loading import carve, open_text
from nlpkit.errors import NlpkitError

ITEMS = [(f"sentence number {i} about {'abc'[i % 3]}", "xyz"[i % 3]) for i in range(40)]


@dataclass
class Loader:
    """How one generic loader's files look: ``lines(items)`` gives the file's lines and the line of each item."""

    cls: type
    suffix: str

    def lines(self, items: list[tuple[str, str]]) -> tuple[list[str], list[int]]:
        if self.cls is TextFiles:
            return ["text,label", *(f"{t},{label}" for t, label in items)], [i + 2 for i in range(len(items))]
        if self.cls is ParallelFiles:
            return [f"{t}\t{label} {t}" for t, label in items], [i + 1 for i in range(len(items))]
        out, starts = [], []
        for t, label in items:
            starts.append(len(out) + 1)
            words = t.split()
            out += [f"{words[0]} B-{label.upper()}", *(f"{w} O" for w in words[1:]), ""]
        return out, starts

    def malformed(self) -> str:
        """A line this loader must refuse."""
        return {TextFiles: "one,field,too many", ParallelFiles: "no tab on this line"}.get(self.cls, "lonely")

    def write(self, path: Path, items: list[tuple[str, str]], encoding: str = "utf-8") -> list[int]:
        lines, starts = self.lines(items)
        path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
        return starts

    def key(self, record: dict) -> str:
        """The input a record was written from."""
        return record.get("text") or record.get("source") or " ".join(record["tokens"])

    def dataset(self, folder: Path, **options):
        return self.cls(self.cls.Options(**options), folder)


LOADERS = [Loader(TextFiles, ".csv"), Loader(ConllFiles, ".txt"), Loader(ParallelFiles, ".tsv")]


@pytest.fixture(params=LOADERS, ids=lambda loader: loader.cls.name)
def loader(request) -> Loader:
    return request.param


def splits(ds) -> dict[str, list[dict]]:
    return {s: ds.load(s) for s in ("train", "validation", "test")}


# ---------------------------------------------------------------- the same split options everywhere


def test_paths_are_relative_to_data_dir(loader, tmp_path):
    data = tmp_path / "my data"
    data.mkdir()
    loader.write(data / f"train{loader.suffix}", ITEMS)
    loader.write(data / f"test{loader.suffix}", ITEMS[:5])
    out = splits(loader.dataset(data, train=f"train{loader.suffix}", test=f"test{loader.suffix}",
                                validation_size=4))
    assert [loader.key(r) for r in out["test"]] == [t for t, _ in ITEMS[:5]]
    assert len(out["validation"]) == 4 and len(out["train"]) == len(ITEMS) - 4
    with pytest.raises(NlpkitError, match=r"my data/nowhere"):
        loader.dataset(data, train="nowhere" + loader.suffix, test=f"test{loader.suffix}").load("train")


@pytest.mark.parametrize("validation_size, test_size, sizes", [(5, 7, (28, 5, 7)), (0.25, 0.1, (26, 10, 4))])
def test_counts_or_fractions_carve_validation_and_test_from_train(loader, tmp_path, validation_size, test_size,
                                                                     sizes):
    loader.write(tmp_path / f"all{loader.suffix}", ITEMS)
    ds = loader.dataset(tmp_path, train=f"all{loader.suffix}", validation_size=validation_size, test_size=test_size)
    out = splits(ds)
    assert tuple(len(out[s]) for s in ("train", "validation", "test")) == sizes
    keys = {s: {loader.key(r) for r in out[s]} for s in out}
    assert keys["train"] | keys["validation"] | keys["test"] == {t for t, _ in ITEMS}
    assert not keys["train"] & keys["validation"] and not keys["validation"] & keys["test"]
    # the carving is seeded: the same seed gives the same split, another seed another, never the file's head
    again = splits(loader.dataset(tmp_path, train=f"all{loader.suffix}", validation_size=validation_size,
                                  test_size=test_size))
    other = splits(loader.dataset(tmp_path, train=f"all{loader.suffix}", validation_size=validation_size,
                                  test_size=test_size, split_seed=1))
    assert again == out and other["test"] != out["test"]
    assert [loader.key(r) for r in out["test"]] != [t for t, _ in ITEMS[: sizes[2]]]


def test_carving_keeps_a_repeated_input_in_one_split(loader, tmp_path):
    items = [item for item in ITEMS[:20] for _ in range(3)]  # every input three times (e.g. several references)
    loader.write(tmp_path / f"all{loader.suffix}", items)
    out = splits(loader.dataset(tmp_path, train=f"all{loader.suffix}", validation_size=6, test_size=6))
    keys = {s: [loader.key(r) for r in out[s]] for s in out}
    assert len(keys["validation"]) == 6 and len(keys["test"]) == 6
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not set(keys[a]) & set(keys[b]), (a, b)


def test_encoding_option(loader, tmp_path):
    items = [("café crème brûlée", "x"), *ITEMS[:9]]
    loader.write(tmp_path / f"latin{loader.suffix}", items, encoding="latin-1")
    ds = loader.dataset(tmp_path, train=f"latin{loader.suffix}", test=f"latin{loader.suffix}", encoding="latin-1")
    assert loader.key(ds.load("test")[0]) == "café crème brûlée"
    utf8 = loader.dataset(tmp_path, train=f"latin{loader.suffix}", test=f"latin{loader.suffix}")
    line = loader.lines(items)[1][0]
    with pytest.raises(NlpkitError, match=rf"latin{loader.suffix}, line {line}: byte 0xe9 \(column 4\) is not "
                                          r"valid utf-8 text.*encoding: latin-1"):
        utf8.load("test")
    with pytest.raises(NlpkitError, match="Unknown text encoding 'latin-9x'"):
        loader.dataset(tmp_path, train=f"latin{loader.suffix}", test=f"latin{loader.suffix}",
                       encoding="latin-9x").load("test")


# ---------------------------------------------------------------- the same errors everywhere


def test_malformed_row_names_file_and_line(loader, tmp_path):
    lines, starts = loader.lines(ITEMS[:10])
    lines.insert(starts[6] - 1, loader.malformed())  # the line where item 6 was
    (tmp_path / f"bad{loader.suffix}").write_text("\n".join(lines) + "\n")
    with pytest.raises(NlpkitError, match=rf"bad{loader.suffix}, line {starts[6]}: "):
        loader.dataset(tmp_path, train=f"bad{loader.suffix}", test=f"bad{loader.suffix}").load("test")


def test_binary_file_and_truncated_gzip(loader, tmp_path):
    loader.write(tmp_path / "ok.txt", ITEMS)
    (tmp_path / f"model{loader.suffix}").write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00binary\x00\xff\x00")
    with pytest.raises(NlpkitError, match=rf"model{loader.suffix}, line 1: a NUL byte: this is a binary file"):
        loader.dataset(tmp_path, train=f"model{loader.suffix}", test="ok.txt").load("train")
    whole = gzip.compress((tmp_path / "ok.txt").read_bytes())
    (tmp_path / f"cut{loader.suffix}.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NlpkitError, match=rf"cut{loader.suffix}.gz, line \d+: the gzip data is truncated"):
        loader.dataset(tmp_path, train=f"cut{loader.suffix}.gz", test="ok.txt").load("train")


def test_empty_file_and_empty_carved_split_name_the_file(loader, tmp_path):
    (tmp_path / f"empty{loader.suffix}").write_text("text,label\n\n" if loader.cls is TextFiles else "\n\n")
    loader.write(tmp_path / f"ok{loader.suffix}", ITEMS[:3])
    with pytest.raises(NlpkitError, match=rf"empty{loader.suffix}: no .* in this file"):
        loader.dataset(tmp_path, train=f"ok{loader.suffix}", test=f"empty{loader.suffix}").load("test")
    with pytest.raises(NlpkitError, match=rf"ok{loader.suffix}: the validation split carved from this file "
                                          r"\(3 examples\) is empty"):
        loader.dataset(tmp_path, train=f"ok{loader.suffix}", test=f"ok{loader.suffix}",
                       validation_size=0.1).load("validation")
    with pytest.raises(NlpkitError, match=rf"ok{loader.suffix}: the train split carved from this file"):
        loader.dataset(tmp_path, train=f"ok{loader.suffix}", test=f"ok{loader.suffix}",
                       validation_size=3).load("train")


def test_bad_split_options(loader, tmp_path):
    loader.write(tmp_path / f"all{loader.suffix}", ITEMS)
    with pytest.raises(NlpkitError, match=r"needs dataset_options.test .*or test_size"):
        loader.dataset(tmp_path, train=f"all{loader.suffix}").load("train")
    with pytest.raises(NlpkitError, match=r"validation_size: 2.0 is read as a fraction .* as an integer \(e.g. 2\)"):
        loader.dataset(tmp_path, train=f"all{loader.suffix}", test_size=3, validation_size=2.0).load("train")


# ---------------------------------------------------------------- the reading helpers every loader uses


def test_built_in_readers_answer_bad_files_too(tmp_path):
    (tmp_path / "train.csv").write_bytes(b'"1","Title","Body"\n"2","Caf\xe9","x"\n')
    with pytest.raises(NlpkitError, match=r"train.csv, line 2: byte 0xe9"):
        read_agnews_csv(tmp_path / "train.csv")
    (tmp_path / "quote.csv").write_text('"1","Title","Body"\n"2","open quote,"x\n')
    with pytest.raises(NlpkitError, match=r"quote.csv, line 2: malformed CSV"):
        read_agnews_csv(tmp_path / "quote.csv")
    whole = gzip.compress(b"EU B-ORG\nrejects O\n\n" * 2000)
    (tmp_path / "eng.train").write_bytes(whole[:-40])
    with pytest.raises(NlpkitError, match=r"eng.train, line \d+: the gzip data is truncated"):
        read_conll(tmp_path / "eng.train")
    (tmp_path / "train.en").write_text("a dog\n")
    (tmp_path / "train.de").write_bytes(b"\x00\x01\x02")
    with pytest.raises(NlpkitError, match=r"train.de, line 1: a NUL byte"):
        read_line_aligned(tmp_path / "train.en", tmp_path / "train.de")
    (tmp_path / "bom.txt").write_bytes("\ufeffEU B-ORG\n".encode())
    assert read_conll(tmp_path / "bom.txt")[0]["tokens"] == ["EU"]  # a byte-order mark is not part of the token
    (tmp_path / "wide.txt").write_text("Köln B-LOC\n", encoding="utf-16")
    with open_text(tmp_path / "wide.txt", "utf-16") as f:
        assert list(f) == ["Köln B-LOC\n"]


def test_carve_groups_and_counts():
    records = [{"k": i // 2} for i in range(20)]
    out = carve(records, {"test": 4, "validation": 3}, seed=0, key=lambda r: r["k"])
    assert len(out["test"]) == 4 and len(out["validation"]) == 4  # whole groups: at least the count
    assert sum(map(len, out.values())) == 20


def test_cli_names_the_truncated_file_instead_of_aborting(tmp_path):
    whole = gzip.compress(("text,label\n" + "".join(f"t{i} words,{'ab'[i % 2]}\n" for i in range(3000))).encode())
    (tmp_path / "train.csv.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "recipe.yaml").write_text(
        f"name: cut\noutput: {tmp_path}/runs\nreports: {tmp_path}/reports\n"
        f"task: {{name: classification, dataset: text_files, data_dir: {tmp_path},\n"
        "       dataset_options: {train: train.csv.gz, test_size: 10}}\nmodels: {lstm: {epochs: 1}}\n")
    done = subprocess.run([sys.executable, "-m", "nlpkit", "run", str(tmp_path / "recipe.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "train.csv.gz, line" in done.stderr and "gzip data is truncated" in done.stderr
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr
