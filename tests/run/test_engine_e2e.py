"""End to end through the CLI, per built-in model: run folder contents, predict reproduces test predictions,
finished runs are skipped on re-run."""

import json
import re
import textwrap

import pytest
import torch
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.config.recipe import TaskEntry
from nlpkit.plugins import registry
from nlpkit.run.engine import load_splits
from nlpkit.run.predict import load_run, predict_examples
from nlpkit.train.hardware import cpu_name, device_description

RECIPE = """\
name: tiny
output: {out}/runs
reports: {out}/reports
task:
  name: classification
  dataset: toy_topics
  dataset_options: {{train_size: 96, eval_size: 32}}
models:
  lstm: {{vocab_size: 300, embedding_dim: 16, hidden_size: 16}}
  attention: {{vocab_size: 300, embedding_dim: 16, hidden_size: 16, attention_size: 8}}
  bert: {{max_length: 24, lr: 5.0e-5, max_steps: 4}}
train: {{epochs: 2, batch_size: 16, log_every: 2, progress: false, precision: fp32}}
seeds: [1]
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    recipe = out / "tiny.yaml"
    recipe.write_text(textwrap.dedent(RECIPE.format(out=out)))
    result = CliRunner().invoke(main, ["run", str(recipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, recipe, result.output


@pytest.mark.parametrize("model", ["lstm", "attention", "bert"])
def test_run_folder_contents(finished, model):
    out, _, _ = finished
    folder = out / "runs" / "tiny" / f"classification-{model}-seed1"
    for name in ("recipe.yaml", "task.json", "metrics.jsonl", "predictions.jsonl", "results.json",
                 "model/config.json", "model/model.safetensors"):
        assert (folder / name).exists(), name
    res = json.loads((folder / "results.json").read_text())
    assert res["model"] == model and res["seed"] == 1 and res["task"] == "classification"
    assert 0.0 <= res["test"]["accuracy"] <= 1.0 and "macro_f1" in res["test"]
    assert res["parameters"] > 0
    assert res["train_examples_per_s"] > 0 and res["peak_memory_mb"] > 0 and res["precision"] == "fp32"
    assert res["device"] == device_description(torch.device("cpu")) and cpu_name() in res["device"]
    assert len(res["test_details"]["confusion_matrix"]) == 4
    logs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "train" and "loss" in r for r in logs)
    validation = [r for r in logs if r["split"] == "validation"]
    assert validation and max(r["accuracy"] for r in validation) == res["validation"]["accuracy"]  # the best one
    preds = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 32 and {"text", "label", "prediction"} <= set(preds[0])


@pytest.mark.parametrize("model", ["lstm", "attention", "bert"])
def test_predict_reloads_and_reproduces_test_predictions(finished, model):
    out, _, _ = finished
    folder = out / "runs" / "tiny" / f"classification-{model}-seed1"
    task, loaded = load_run(folder)
    _, examples = load_splits(TaskEntry(name="classification", dataset="toy_topics",
                                        dataset_options={"train_size": 96, "eval_size": 32}), registry())
    again = predict_examples(loaded, examples["test"])
    saved = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert [task.spec.labels[p["prediction"]] for p in again] == [s["prediction"] for s in saved]


def test_predict_cli_prints_label(finished):
    out, _, _ = finished
    folder = out / "runs" / "tiny" / "classification-attention-seed1"
    result = CliRunner().invoke(main, ["predict", str(folder), "The striker scored in the league match"])
    assert result.exit_code == 0, result.output
    assert "->" in result.output and any(t in result.output for t in ("sports", "business", "science", "politics"))


def test_summary_written(finished):
    out, _, _ = finished
    reports = out / "reports" / "tiny"
    summary = (reports / "summary.md").read_text()
    assert "| model | seeds | accuracy (main) | macro_f1 | examples/s |" in summary
    for model in ("lstm", "attention", "bert"):
        assert re.search(rf"^\| {model} \| 1 \| (\*\*)?[01]\.\d{{4}}", summary, re.M), summary
    assert "train_examples_per_s_mean" in (reports / "summary.csv").read_text()
    for name in ("report.md", "report.html", "results.csv"):  # the full comparison report, too
        assert (reports / name).exists(), name


def test_rerun_skips_finished_runs(finished):
    out, recipe, _ = finished
    before = (out / "runs/tiny/classification-lstm-seed1/results.json").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert result.output.count("finished, skipping") == 3
    assert (out / "runs/tiny/classification-lstm-seed1/results.json").stat().st_mtime_ns == before


def test_dry_run_and_bad_recipe_errors(finished, tmp_path):
    out, recipe, _ = finished
    result = CliRunner().invoke(main, ["run", str(recipe), "--dry-run"])
    assert result.exit_code == 0 and "3 runs" in result.output and "[finished]" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {name: classification, dataset: toy_topics}\nmodels: {lstm: {lr: 1}}\nseedz: [1]\n")
    result = CliRunner().invoke(main, ["run", str(bad)])
    assert result.exit_code == 2
    assert "line 3" in result.output and "Did you mean 'seeds'" in result.output and "Traceback" not in result.output


def test_predict_on_unfinished_folder_is_a_clear_error(tmp_path):
    (tmp_path / "half").mkdir()
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "half"), "x"])
    assert result.exit_code == 2 and "not a finished nlpkit run folder" in result.output
