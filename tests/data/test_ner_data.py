"""NER data: column files, tag-scheme normalisation, label-set errors with file and line, seqeval metrics."""

import gzip

import pytest
from nlpkit_plugins.datasets.conll2003 import Conll2003
from nlpkit_plugins.datasets.conll_files import ConllFiles, read_conll
from nlpkit_plugins.tasks.ner import NER, entities, split_words, to_iob2

from nlpkit.errors import NlpkitError

CONLL = """\
-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
"""


def test_read_conll_skips_docstart_and_splits_on_blank_lines(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text(CONLL)
    sents = read_conll(path)
    assert [s["tokens"] for s in sents] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    assert sents[0]["tags"] == ["I-ORG", "O", "I-MISC", "O"]
    assert sents[0]["where"] == f"{path}, line 3" and sents[1]["where"] == f"{path}, line 8"


def test_read_conll_gzip_and_any_tag_column(tmp_path):
    path = tmp_path / "data.gz"
    with gzip.open(path, "wt") as f:
        f.write(CONLL)
    sents = read_conll(path, tag_column=2)  # the chunk column
    assert sents[0]["tags"] == ["I-NP", "I-VP", "I-NP", "I-NP"]


def test_read_conll_short_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(NlpkitError, match=r"bad.txt, line 2: expected a token in column 0 and a tag in column 1"):
        read_conll(path, tag_column=1)


@pytest.mark.parametrize(
    "tags, iob2",
    [
        (["I-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"]),  # IOB1: an entity starts with I-
        (["I-LOC", "B-LOC", "I-LOC"], ["B-LOC", "B-LOC", "I-LOC"]),  # IOB1: same-type entity right after another
        (["I-LOC", "I-ORG"], ["B-LOC", "B-ORG"]),  # a different type starts a new entity
        (["B-PER", "I-PER", "O", "B-PER"], ["B-PER", "I-PER", "O", "B-PER"]),  # IOB2 unchanged
        (["S-PER", "B-LOC", "E-LOC", "S-LOC", "O"], ["B-PER", "B-LOC", "I-LOC", "B-LOC", "O"]),  # BIOES
        (["O", "I-MISC"], ["O", "B-MISC"]),
    ],
)
def test_to_iob2(tags, iob2):
    assert to_iob2(tags) == iob2


def test_to_iob2_rejects_unknown_prefix_with_line():
    with pytest.raises(NlpkitError, match=r"f.txt, line 12: tag 'PER' is not O or B-/I-/E-/S-<type>"):
        to_iob2(["O", "O", "PER"], "f.txt, line 10")


def test_entities_strict():
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "B-ORG", "I-ORG"]) == [(0, 2, "PER"), (4, 5, "LOC"),
                                                                                        (5, 7, "ORG")]


def records(sentences):
    return [{"tokens": t.split(), "tags": g.split(), "where": f"x.txt, line {10 * i + 1}"}
            for i, (t, g) in enumerate(sentences)]


def test_prepare_labels_from_train_and_error_names_file_and_line():
    train = records([("EU rejects German call", "I-ORG O I-MISC O")])
    task = NER()
    out = task.prepare({"train": train, "validation": train, "test": train}, Conll2003().labels())
    assert task.spec.labels == ["O", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    assert out["train"][0] == {"tokens": ["EU", "rejects", "German", "call"], "tags": [1, 0, 3, 0]}
    test = [{"tokens": ["a", "Peter"], "tags": ["O", "I-PER"], "where": "eng.testb, line 40"}]
    with pytest.raises(NlpkitError, match=r"eng.testb, line 41: tag 'I-PER' \(entity type 'PER'\) never occurs"):
        NER().prepare({"train": train, "validation": train, "test": test})


def test_metrics_are_entity_level_strict():
    task = NER()
    data = records([("Peter Blackburn in Paris", "B-PER I-PER O B-LOC"), ("EU said", "B-ORG O")])
    examples = task.prepare({"train": data, "validation": data, "test": data})["test"]
    idx = {n: i for i, n in enumerate(task.spec.labels)}
    preds = [{"prediction": [idx[t] for t in ("B-PER", "O", "O", "B-LOC")]},  # PER cut short: wrong entity
             {"prediction": [idx["I-ORG"], idx["O"]]}]  # strict: a stray I-ORG is no entity
    m = task.metrics(examples, preds)
    assert m["precision"] == pytest.approx(1 / 2) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1_LOC"] == 1.0 and m["f1_PER"] == 0.0 and m["f1_ORG"] == 0.0
    assert m["token_accuracy"] == pytest.approx(4 / 6)
    assert m["details"]["per_type"]["PER"]["support"] == 1
    row = task.record(0, examples[0], preds[0])
    assert row["gold"] == ["B-PER", "I-PER", "O", "B-LOC"] and row["prediction"] == ["B-PER", "O", "O", "B-LOC"]
    tagged = {"prediction": [idx[t] for t in ("B-PER", "I-PER", "O", "B-LOC")]}
    words = {"tokens": ["Peter", "Blackburn", "in", "Paris"]}
    assert task.render(words, tagged) == "Peter Blackburn (PER); Paris (LOC)"


def test_split_words():
    assert split_words('Merkel met Macron in Paris. ("U.S.")') == ["Merkel", "met", "Macron", "in", "Paris", ".",
                                                                  "(", '"', "U.S.", '"', ")"]


def test_conll_files_dataset_carves_validation_and_resolves_data_dir(tmp_path):
    (tmp_path / "train.txt").write_text("\n\n".join(f"w{i} B-X\nv O" for i in range(20)))
    (tmp_path / "test.txt").write_text("a B-X\n")
    ds = ConllFiles(ConllFiles.Options(train="train.txt", test="test.txt", validation_size=0.25), tmp_path)
    train, val = ds.load("train"), ds.load("validation")
    assert len(train) == 15 and len(val) == 5 and ds.load("test")[0]["tags"] == ["B-X"]
    assert not {s["tokens"][0] for s in train} & {s["tokens"][0] for s in val}


def test_conll2003_reads_local_files(tmp_path):
    for name in ("eng.train", "eng.testa", "eng.testb"):
        (tmp_path / name).write_text(CONLL)
    ds = Conll2003(data_dir=tmp_path)
    assert ds.load("test")[1]["tokens"] == ["Peter", "Blackburn"]
    with pytest.raises(NlpkitError, match="No eng.testa"):
        (tmp_path / "eng.testa").unlink()
        ds.load("validation")
