"""The built-in plugins pass the same conformance kit (nlpkit.testing) a third-party plugin runs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from nlpkit.testing import DatasetKit, ModelKit, TaskKit

# Tiny but real: every layer the plugins build for each kind, at widths that train in milliseconds.
RECURRENT = {"vocab_size": 200, "embedding_dim": 32, "hidden_size": 32, "dropout": 0.0, "max_length": 24,
             "char_dim": 8, "char_filters": 8, "word_dropout": 0.0, "target_vocab_size": 100, "beam_size": 2,
             "label_smoothing": 0.0}


class TestLstm(ModelKit):
    plugin = "lstm"
    options = RECURRENT
    lr = 1e-2


class TestAttention(ModelKit):
    plugin = "attention"
    options = {**RECURRENT, "attention_size": 16}
    lr = 1e-2


class TestBert(ModelKit):
    plugin = "bert"
    lr = 5e-3

    @pytest.fixture(scope="class")
    @classmethod
    def plugin_options(cls, tiny_bert):
        return {"pretrained": tiny_bert, "max_length": 32, "stride": 8, "dropout": 0.0, "target_vocab_size": 100,
                "embedding_dim": 16, "hidden_size": 32, "attention_size": 16, "beam_size": 2, "label_smoothing": 0.0,
                "encoder_lr": 1e-3}


# ----------------------------------------------------------------------------------- tasks


class TestClassificationTask(TaskKit):
    plugin = "classification"

    def known_case(self):
        train = [{"text": f"t{i}", "label": lab} for i, lab in enumerate("aabb")]
        test = [{"text": f"u{i}", "label": lab} for i, lab in enumerate("aabb")]
        preds = [{"prediction": p} for p in (0, 1, 1, 1)]  # labels sorted: a=0, b=1; 3 of 4 right
        # macro F1: a has P=1, R=0.5 -> 2/3; b has P=2/3, R=1 -> 0.8; mean 0.7333
        return {"train": train, "validation": train, "test": test}, preds, {"accuracy": 0.75, "macro_f1": 0.73333}


class TestNerTask(TaskKit):
    plugin = "ner"

    def known_case(self):
        sentence = {"tokens": ["Ann", "met", "Bob", "in", "Paris"], "tags": ["B-PER", "O", "B-PER", "O", "B-LOC"]}
        splits = {"train": [sentence], "validation": [sentence], "test": [sentence]}
        task = self.task_cls_for_case()
        labels = task.prepare(splits)["train"][0]["tags"]
        pred = list(labels)
        pred[4] = labels[1]  # Paris tagged O: 2 of 3 entities found, none wrong -> P=1, R=2/3, F1=0.8
        return splits, [{"prediction": pred}], {"f1": 0.8, "precision": 1.0, "recall": 2 / 3}

    def task_cls_for_case(self):
        from nlpkit.plugins import registry

        return registry().task(self.plugin)()


class TestTranslationTask(TaskKit):
    plugin = "translation"

    def known_case(self):
        pairs = [{"source": "a small house", "target": "ein kleines haus am see"}]
        return {"train": pairs, "validation": pairs, "test": pairs}, [{"prediction": "ein kleines haus am see"}], \
            {"bleu": 100.0}


# ----------------------------------------------------------------------------------- datasets


class TestToyTopics(DatasetKit):
    plugin = "toy_topics"
    options = {"train_size": 40, "eval_size": 10}


AG_ROWS = "".join(f'"{1 + i % 4}","Title {i}","Some text number {i}"\n' for i in range(12))


class TestAgNews(DatasetKit):
    plugin = "ag_news"
    options = {"validation_size": 3}

    def write_data(self, folder: Path):
        (folder / "train.csv").write_text(AG_ROWS)
        with gzip.open(folder / "test.csv.gz", "wt") as f:
            f.write(AG_ROWS)
        return {}

    def write_bad_data(self, folder: Path):
        (folder / "train.csv").write_text(AG_ROWS + '"9","Bad","row"\n')
        (folder / "test.csv").write_text(AG_ROWS)
        return {}, "train.csv", "line 13"


class TestTextFiles(DatasetKit):
    plugin = "text_files"

    def write_data(self, folder: Path):
        rows = "".join(f"{'ab'[i % 2]},sentence number {i}\n" for i in range(20))
        (folder / "train.csv").write_text("label,text\n" + rows)
        (folder / "test.csv").write_text("label,text\n" + rows)
        return {"train": str(folder / "train.csv"), "test": str(folder / "test.csv")}

    def write_bad_data(self, folder: Path):
        (folder / "train.csv").write_text("category,text\nx,some text\n")
        return {"train": str(folder / "train.csv"), "test": str(folder / "train.csv")}, "train.csv", None


CONLL = "-DOCSTART- -X- -X- O\n\n" + "".join(
    f"Ann NNP B-NP I-PER\nvisited VBD B-VP O\nParis{i} NNP B-NP I-LOC\n. . O O\n\n" for i in range(6))


class TestConll2003(DatasetKit):
    plugin = "conll2003"

    def write_data(self, folder: Path):
        for name in ("eng.train", "eng.testa", "eng.testb"):
            (folder / name).write_text(CONLL)
        return {}

    def write_bad_data(self, folder: Path):  # the reader takes any tag (the ner task checks them): a missing file
        (folder / "eng.train").write_text(CONLL)
        (folder / "eng.testb").write_text(CONLL)
        return {}, "eng.testa", None


class TestConllFiles(DatasetKit):
    plugin = "conll_files"

    def write_data(self, folder: Path):
        (folder / "train.txt").write_text(CONLL)
        (folder / "test.txt").write_text(CONLL)
        return {"train": str(folder / "train.txt"), "test": str(folder / "test.txt"), "validation_size": 2}

    def write_bad_data(self, folder: Path):
        (folder / "train.txt").write_text(CONLL + "lonely\n")
        return ({"train": str(folder / "train.txt"), "test": str(folder / "train.txt"), "tag_column": 3},
                "train.txt", "line 3")


EN = [f"a dog runs number {i}" for i in range(8)]
DE = [f"ein hund rennt nummer {i}" for i in range(8)]


class TestMulti30k(DatasetKit):
    plugin = "multi30k"

    def write_data(self, folder: Path):
        for stem in ("train", "val", "test_2016_flickr"):
            (folder / f"{stem}.en").write_text("\n".join(EN) + "\n")
            (folder / f"{stem}.de").write_text("\n".join(DE) + "\n")
        return {}

    def write_bad_data(self, folder: Path):
        self.write_data(folder)
        (folder / "train.de").write_text("\n".join(DE[:-1]) + "\n")
        return {}, "train.de", None


class TestParallelFiles(DatasetKit):
    plugin = "parallel_files"

    def write_data(self, folder: Path):
        (folder / "train.tsv").write_text("".join(f"{e}\t{d}\n" for e, d in zip(EN, DE)))
        return {"train": str(folder / "train.tsv"), "test": str(folder / "train.tsv"), "validation_size": 2}

    def write_bad_data(self, folder: Path):
        (folder / "train.tsv").write_text(f"{EN[0]}\t{DE[0]}\nno tab here\n")
        return {"train": str(folder / "train.tsv"), "test": str(folder / "train.tsv")}, "train.tsv", "line 2"
