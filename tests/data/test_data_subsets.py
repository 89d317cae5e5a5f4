"""Subsets (max_train/eval/test_examples) and a run's warnings (still improving at the end; classes never
predicted), from the helpers to results.json."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import pytest

from nlpkit.config.recipe import parse_recipe
from nlpkit.data.loading import subset
from nlpkit.run.diagnostics import never_predicted, run_warnings, still_improving
from nlpkit.run.engine import execute

# ---------------------------------------------------------------- subsets


def test_subset_is_a_seeded_sample_not_the_head():
    rows = list(range(100))  # e.g. a file sorted by length: its head is its shortest sentences
    a, b, c = subset(rows, 10, seed=1), subset(rows, 10, seed=1), subset(rows, 10, seed=2)
    assert a == b and a != c and a != rows[:10]
    assert a == sorted(a) and len(set(a)) == 10  # file order kept, no repeats
    assert max(a) > 50  # drawn from the whole file
    assert subset(rows, 10, seed=1, how="head") == rows[:10]
    assert subset(rows, None, seed=1) is rows and subset(rows, 500, seed=1) is rows


RECIPE = """\
name: cut
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 60, eval_size: 40}}}}
models:
  lstm: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8, max_train_examples: 30, max_eval_examples: 10}}
  lstm-test: {{model: lstm, vocab_size: 200, embedding_dim: 8, hidden_size: 8, max_test_examples: 12}}
train: {{epochs: 1, batch_size: 16, progress: false}}
"""


@pytest.fixture(scope="module")
def cut_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("cut")
    recipe = parse_recipe(textwrap.dedent(RECIPE.format(out=out)))
    cache: dict = {}
    return {spec.label: (spec, execute(spec, cache=cache)) for spec in recipe.runs}


def test_max_eval_examples_cuts_validation_only(cut_runs):
    spec, res = cut_runs["lstm"]
    assert res["train_examples"] == 30 and res["test_examples"] == res["test_examples_available"] == 40
    assert not any("test split cut" in w for w in res["warnings"])
    assert len(json.loads(spec.folder.joinpath("results.json").read_text())["test_details"]["confusion_matrix"]) == 4
    predictions = spec.folder.joinpath("predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 40


def test_max_test_examples_is_said_in_results(cut_runs):
    spec, res = cut_runs["lstm-test"]
    assert res["test_examples"] == 12 and res["test_examples_available"] == 40
    assert "test split cut to 12 of 40 examples (max_test_examples, random)" in res["warnings"]
    saved = json.loads(spec.folder.joinpath("results.json").read_text())
    assert saved["warnings"] == res["warnings"]


# ---------------------------------------------------------------- warnings


@pytest.mark.parametrize("curve, greater, warned", [
    ([0.02, 0.05, 0.09, 0.16], True, True),  # NER F1 climbing steeply at the end (issue 23)
    ([0.80, 0.90, 0.91, 0.911], True, False),  # flattened: +1.2% over the last two evaluations
    ([0.80, 0.90, 0.92, 0.91], True, False),  # the best came before the end
    ([0.90, 0.30, 0.40, 0.50], True, False),  # recovering, yet below an earlier best: not "still improving"
    ([0.5], True, False),  # one evaluation tells no trend
    ([0.3, 0.6], True, True),  # two evaluations: the last step is the window
    ([4.0, 3.0, 2.5, 2.0], False, True),  # a loss still falling
    ([2.0, 2.01, 2.02], False, False),  # a loss rising: lower is better, the best came first
])
def test_still_improving_on_scripted_curves(curve, greater, warned):
    message = still_improving(curve, greater, "f1")
    assert (message is not None) == warned, message
    if warned:
        assert message.startswith("still improving when training stopped: validation f1")


def test_never_predicted_classes():
    labels = ["World", "Sports", "Business"]
    assert never_predicted(labels, [0, 1, 2, 2], [0, 1, 2, 1]) is None
    message = never_predicted(labels, [0, 1, 2, 2], [0, 1, 1, 1], ignore=())
    assert message.startswith("never predicts these classes, present in the test set: Business (2 in test)")


def test_run_warnings_reads_the_logged_curve(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": 10 * i, "split": "train", "loss": 1.0} for i in range(1, 5)]
    rows += [{"step": 10 * i, "split": "validation", "f1": v} for i, v in enumerate([0.01, 0.04, 0.08, 0.16], 1)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = SimpleNamespace(main_metric="f1", greater_is_better=True, kind="tagging",
                           spec=SimpleNamespace(labels=["O", "B-PER", "I-PER", "B-LOC"]))
    examples = [{"tags": [0, 1, 2, 0]}, {"tags": [3, 0]}]
    predictions = [{"prediction": [0, 1, 0, 0]}, {"prediction": [0, 0]}]
    warnings = run_warnings(log, task, examples, predictions, ["a note"])
    assert warnings[0] == "a note" and "0.08 -> 0.16" in warnings[1]
    assert warnings[2].startswith("never predicts these tags, present in the test set: I-PER (1 in test), B-LOC")
