"""``nlpkit runs``: a table of run folders (finished, unfinished, failed), ``--changed`` with only the settings that
differ, ``runs diff A B``, ``--json``/``--csv``. The folders are written by hand, as a run leaves them."""

import csv
import io
import json

import yaml
from click.testing import CliRunner

from nlpkit.cli import main


def make_folder(root, name, lr=1e-3, seed=1, model="lstm", test=None, status="finished"):
    folder = root / name
    folder.mkdir(parents=True)
    settings = {"recipe": "demo", "task": {"name": "classification", "dataset": "toy_topics", "options": {}},
                "label": model, "model": model, "model_options": {"hidden_size": 8},
                "train": {"lr": lr, "epochs": 3.0, "batch_size": 16}, "seed": seed, "settings_hash": f"h{lr}"}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(settings))
    if status == "finished":
        results = {"task": "classification", "dataset": "toy_topics", "model": model, "seed": seed,
                   "main_metric": "accuracy", "test": test or {"accuracy": 0.5, "macro_f1": 0.4},
                   "validation": {"accuracy": 0.45}, "steps": 10, "train_seconds": 2.5,
                   "train_examples_per_s": 128.0}
        (folder / "results.json").write_text(json.dumps(results))
    elif status == "failed":
        (folder / "failure.json").write_text(json.dumps({"error": "RuntimeError: boom"}))
    return folder


def runs(*args):
    result = CliRunner().invoke(main, ["runs", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_table_lists_every_run_with_its_status_metric_and_speed(tmp_path):
    make_folder(tmp_path, "classification-lstm-seed1")
    make_folder(tmp_path, "classification-lstm-seed2", seed=2, status="failed")
    make_folder(tmp_path, "classification-bert-seed1", model="bert", status="unfinished")
    rows = json.loads(runs(tmp_path, "--json"))
    by_run = {row["run"]: row for row in rows}
    assert by_run["classification-lstm-seed1"] | {"folder": None} == {
        "run": "classification-lstm-seed1", "task": "classification", "dataset": "toy_topics", "model": "lstm",
        "seed": 1, "status": "finished", "metric": "accuracy", "value": 0.5, "train_seconds": 2.5,
        "examples_per_s": 128.0, "folder": None}
    assert by_run["classification-lstm-seed2"]["status"] == "failed"
    assert by_run["classification-bert-seed1"]["status"] == "unfinished"
    assert by_run["classification-bert-seed1"]["model"] == "bert"  # from its recipe.yaml: no results yet
    text = runs(tmp_path)
    assert text.splitlines()[0].split() == ["run", "task", "dataset", "model", "seed", "status", "metric", "value",
                                            "train_seconds", "examples_per_s"]
    assert len(text.splitlines()) == 2 + 3


def test_changed_shows_just_the_setting_that_differs(tmp_path):
    make_folder(tmp_path / "a", "classification-lstm-seed1", lr=1e-3)
    make_folder(tmp_path / "b", "classification-lstm-seed1", lr=3e-3, test={"accuracy": 0.75})
    rows = json.loads(runs(tmp_path, "--changed", "--json"))
    extra = [{k: v for k, v in row.items() if k not in json.loads(runs(tmp_path, "--json"))[0]} for row in rows]
    assert extra == [{"train.lr": 1e-3}, {"train.lr": 3e-3}]  # not the settings hash, not the seed
    header = runs(tmp_path, "--changed").splitlines()[0].split()
    assert header[-1] == "train.lr" and header[0] == "run"
    assert [row["run"] for row in rows] == ["a/classification-lstm-seed1", "b/classification-lstm-seed1"]
    table = list(csv.DictReader(io.StringIO(runs(tmp_path, "--changed", "--csv"))))
    assert [(r["train.lr"], r["value"]) for r in table] == [("0.001", "0.5"), ("0.003", "0.75")]


def test_diff_lists_setting_and_metric_differences(tmp_path):
    a = make_folder(tmp_path, "classification-lstm-seed1", lr=1e-3)
    b = make_folder(tmp_path, "classification-lstm-seed2", lr=3e-3, seed=2, test={"accuracy": 0.75, "macro_f1": 0.4})
    found = json.loads(runs("diff", a, b, "--json"))
    assert found == {"settings": {"train.lr": [1e-3, 3e-3]}, "metrics": {"test.accuracy": [0.5, 0.75]}}
    text = runs("diff", a, b)
    assert "train.lr: 0.001 -> 0.003" in text and "test.accuracy: 0.5 -> 0.75  (+0.25)" in text


def test_no_run_folders_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["runs", str(tmp_path)])
    assert result.exit_code == 2 and "No run folders under" in result.output
    result = CliRunner().invoke(main, ["runs", "diff", str(tmp_path)])
    assert result.exit_code == 2 and "takes two run folders" in result.output
