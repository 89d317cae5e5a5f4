"""Translation data: line-aligned files (gzip or not), tab-separated pairs, hub rows, and the task's metrics."""

import gzip

import pytest
import sacrebleu
from nlpkit_plugins.datasets.multi30k import Multi30k
from nlpkit_plugins.datasets.parallel_files import ParallelFiles, hub_pairs, read_line_aligned, read_parallel
from nlpkit_plugins.tasks.translation import Translation

from nlpkit.errors import NlpkitError


def write(path, lines, gz=False):
    text = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def test_line_aligned_gzip_and_plain(tmp_path):
    write(tmp_path / "train.en", ["A dog.", "Two  cats."])
    write(tmp_path / "train.de.gz", ["Ein Hund.", "Zwei Katzen."], gz=True)
    pairs = read_parallel(tmp_path / "train", "en", "de")
    assert [(p["source"], p["target"]) for p in pairs] == [("A dog.", "Ein Hund."), ("Two  cats.", "Zwei Katzen.")]
    assert pairs[1]["where"].endswith("line 2")
    reverse = read_parallel(tmp_path / "train", "de", "en")  # the direction is the caller's choice
    assert reverse[0] == {**reverse[0], "source": "Ein Hund.", "target": "A dog."}


def test_line_count_mismatch_names_both_files(tmp_path):
    write(tmp_path / "a.en", ["one", "two", "three"])
    write(tmp_path / "a.de", ["eins", "zwei"])
    with pytest.raises(NlpkitError, match=r"a\.en has 3 lines, .*a\.de has 2"):
        read_line_aligned(tmp_path / "a.en", tmp_path / "a.de")


def test_empty_line_on_one_side_names_file_and_line(tmp_path):
    write(tmp_path / "a.en", ["one", "", "three"])
    write(tmp_path / "a.de", ["eins", "zwei", "drei"])
    with pytest.raises(NlpkitError, match=r"a\.en, line 2: empty, but line 2 of .*a\.de is not"):
        read_line_aligned(tmp_path / "a.en", tmp_path / "a.de")


def test_pair_file_and_bad_line(tmp_path):
    write(tmp_path / "p.tsv", ["A dog.\tEin Hund.", "", "Cats.\tKatzen."])
    assert [p["target"] for p in read_parallel(tmp_path / "p.tsv", "en", "de")] == ["Ein Hund.", "Katzen."]
    write(tmp_path / "bad.tsv", ["A dog.\tEin Hund.", "no tab here"])
    with pytest.raises(NlpkitError, match=r"bad\.tsv, line 2: expected 'source<TAB>target'"):
        read_parallel(tmp_path / "bad.tsv", "en", "de")


def test_hub_rows_translation_dict_or_two_columns():
    assert hub_pairs([{"translation": {"en": "hi", "de": "hallo"}}], "de", "en")[0]["source"] == "hallo"
    assert hub_pairs([{"en": "hi", "de": "hallo"}], "en", "de")[0]["target"] == "hallo"
    with pytest.raises(NlpkitError, match="no columns 'src' and 'de'"):
        hub_pairs([{"en": "hi", "de": "hallo"}], "en", "de", source_column="src")


def test_multi30k_local_files_and_parallel_files_carves_validation(tmp_path):
    for stem in ("train", "val", "test_2016_flickr"):
        write(tmp_path / f"{stem}.en.gz", [f"{stem} sentence {i}" for i in range(5)], gz=True)
        write(tmp_path / f"{stem}.de.gz", [f"{stem} Satz {i}" for i in range(5)], gz=True)
    ds = Multi30k(Multi30k.Options(source="de", target="en"), tmp_path)
    assert ds.load("validation")[0]["source"] == "val Satz 0"
    assert ds.load("test")[4]["target"] == "test_2016_flickr sentence 4"
    pf = ParallelFiles(ParallelFiles.Options(train="train", test="test_2016_flickr", validation_size=2), tmp_path)
    train, val = pf.load("train"), pf.load("validation")
    assert len(train) == 3 and len(val) == 2 and not {r["source"] for r in train} & {r["source"] for r in val}


def test_task_metrics_are_sacrebleu_on_detokenized_text_with_length_buckets():
    task = Translation(Translation.Options(length_buckets=[3]))
    test = [{"source": "a b", "target": "Ein Hund läuft."},
            {"source": "a b c d e", "target": "Zwei Katzen, die schlafen."}]
    examples = task.prepare({"train": [{"source": "a  b", "target": "x y"}], "test": test})
    assert examples["train"][0]["source"] == "a b"  # whitespace normalised
    preds = [{"prediction": "Ein Hund rennt."}, {"prediction": "Zwei Katzen, die schlafen."}]
    m = task.metrics(examples["test"], preds)
    refs = [e["target"] for e in examples["test"]]
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu([p["prediction"] for p in preds], [refs]).score)
    assert 0 < m["chrf"] < 100
    buckets = m["details"]["bleu_by_source_length"]
    assert [b["source_words"] for b in buckets] == ["1-3", "4+"] and buckets[1]["bleu"] == 100.0
    rows = [task.record(i, ex, p | {"attention": [[1.0]]}) for i, (ex, p) in enumerate(zip(examples["test"], preds))]
    assert rows[0]["hypothesis"] == "Ein Hund rennt." and rows[0]["reference"] == "Ein Hund läuft."
    assert "attention" in rows[0]


def test_empty_text_is_an_error_naming_the_record():
    with pytest.raises(NlpkitError, match="f.txt, line 3: empty target"):
        Translation().prepare({"train": [{"source": "a", "target": " ", "where": "f.txt, line 3"}]})


def test_several_references_per_source_are_all_scored(tmp_path):
    write(tmp_path / "train.tsv", ["a b\tx y"])
    write(tmp_path / "test.en", ["the cat sat", "a dog ran"])
    write(tmp_path / "test.de", ["die Katze saß auf der Matte", "ein Hund lief durch den Park"])
    write(tmp_path / "test.de.2", ["eine Katze sitzt auf einer Matte", ""])  # the second sentence has one reference only
    write(tmp_path / "three.tsv", ["the cat sat\tdie Katze saß auf der Matte\teine Katze sitzt auf einer Matte", "a dog ran\tein Hund lief durch den Park"])
    from_files = ParallelFiles(ParallelFiles.Options(train="train.tsv", test="test", test_references=["test.de.2"]),
                               tmp_path).load("test")
    from_columns = ParallelFiles(ParallelFiles.Options(train="train.tsv", test="three.tsv",
                                                       extra_columns="references"), tmp_path).load("test")
    assert [r.get("references") for r in from_files] == [r.get("references") for r in from_columns] == [
        ["die Katze saß auf der Matte", "eine Katze sitzt auf einer Matte"], ["ein Hund lief durch den Park"]]
    task = Translation()
    examples = task.prepare({"train": [{"source": "a", "target": "b"}], "test": from_files})["test"]
    preds = [{"prediction": "eine Katze sitzt auf einer Matte"}, {"prediction": "ein Hund lief durch den Park"}]
    m = task.metrics(examples, preds)
    expected = sacrebleu.corpus_bleu(["eine Katze sitzt auf einer Matte", "ein Hund lief durch den Park"],
                                     [["die Katze saß auf der Matte", "ein Hund lief durch den Park"], ["eine Katze sitzt auf einer Matte", None]]).score
    single = sacrebleu.corpus_bleu(["eine Katze sitzt auf einer Matte", "ein Hund lief durch den Park"], [["die Katze saß auf der Matte", "ein Hund lief durch den Park"]]).score
    assert m["bleu"] == pytest.approx(expected) and m["bleu"] > single + 10
    assert m["details"]["references"] == 2
    assert task.record(0, examples[0], preds[0])["references"] == ["die Katze saß auf der Matte", "eine Katze sitzt auf einer Matte"]
    write(tmp_path / "short.de", ["eine Katze", "sitzt"][:1])
    with pytest.raises(NlpkitError, match=r"short.de: 1 lines, but the test pairs run to line 2"):
        ParallelFiles(ParallelFiles.Options(train="train.tsv", test="test", test_references=["short.de"]),
                      tmp_path).load("test")
