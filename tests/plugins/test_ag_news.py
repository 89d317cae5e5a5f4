"""The ag_news dataset plugin: the original CSV format, gzip or not, clear errors, an offline hub miss."""

import gzip

import pytest
from nlpkit_plugins.datasets.ag_news import AgNews, read_agnews_csv

from nlpkit.errors import NlpkitError

ROWS = '"3","Wall St. Bears Claw Back","Reuters - Short-sellers, ""quoted"" \\\\nnext line"\n"2","Match","Team wins"\n'


def test_reads_original_format_gz_and_plain(tmp_path):
    (tmp_path / "train.csv").write_text(ROWS)
    with gzip.open(tmp_path / "test.csv.gz", "wt") as f:
        f.write(ROWS)
    plain, gz = read_agnews_csv(tmp_path / "train.csv"), read_agnews_csv(tmp_path / "test.csv.gz")
    assert [r["label"] for r in plain] == ["Business", "Sports"] == [r["label"] for r in gz]
    assert plain[0]["text"].startswith("Wall St. Bears Claw Back Reuters - Short-sellers, \"quoted\"")
    assert plain[1]["where"].endswith("train.csv, line 2")


def test_bad_row_names_file_and_line(tmp_path):
    (tmp_path / "train.csv").write_text(ROWS + '"7","Bad class","x"\n')
    with pytest.raises(NlpkitError, match=r"train.csv, line 3: expected 'class index \(1-4\)'"):
        read_agnews_csv(tmp_path / "train.csv")


def test_validation_carved_from_train_when_missing(tmp_path):
    rows = "".join(f'"{1 + i % 4}","title {i}","text {i}"\n' for i in range(50))
    (tmp_path / "train.csv").write_text(rows)
    (tmp_path / "test.csv").write_text(rows[:200])
    ds = AgNews(AgNews.Options(validation_size=10), tmp_path)
    train, val = ds.load("train"), ds.load("validation")
    assert len(train) == 40 and len(val) == 10
    assert not {r["text"] for r in train} & {r["text"] for r in val}


def test_offline_hub_miss_says_how_to_point_at_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NlpkitError, match="NLPKIT_DATA"):
        AgNews(AgNews.Options(hub_id="no-such-org/no-such-dataset-nlpkit"), None).load("test")


def test_real_small_split_if_present():
    import os
    from pathlib import Path

    root = os.environ.get("NLPKIT_DATA")
    if not root or not (Path(root) / "ag_news_small").exists():
        pytest.skip("NLPKIT_DATA with ag_news_small not provided")
    ds = AgNews(None, Path(root) / "ag_news_small")
    assert [len(ds.load(s)) for s in ("train", "validation", "test")] == [6000, 400, 1200]
