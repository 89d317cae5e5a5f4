"""NLPKIT_ENCODED_CACHE: encoded splits are stored once and reused by a later run (another trial: another learning
rate) with the numbers it would have had anyway; whatever changes the features (here the vocabulary size) misses."""

import json

import pytest
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.run import engine

RECIPE = """\
name: tiny
task: {name: classification, dataset: toy_topics, dataset_options: {train_size: 64, eval_size: 16}}
models:
  lstm: {vocab_size: 200, embedding_dim: 8, hidden_size: 8}
train: {epochs: 1, batch_size: 16, progress: false, max_train_examples: 48}
seeds: [1]
"""


@pytest.fixture
def encodes(monkeypatch):
    """How many examples the runs of this process encoded (NLPKIT_IN_PROCESS: the runs are in this process)."""
    calls = []
    original = engine.encode_splits

    def counting(encode, *args, **kwargs):
        def counted(example):
            calls.append(1)
            return encode(example)
        return original(counted, *args, **kwargs)

    monkeypatch.setenv("NLPKIT_IN_PROCESS", "1")
    monkeypatch.setattr(engine, "encode_splits", counting)
    return calls


def run(tmp_path, name, *sets):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / name
    result = CliRunner().invoke(main, ["run", str(recipe), "--no-report", "--set", f"output={out}", *sets])
    assert result.exit_code == 0, result.output
    return json.loads((out / "tiny" / "classification-lstm-seed1" / "results.json").read_text())


def test_encoded_splits_are_reused_by_the_next_trial_and_change_nothing(tmp_path, monkeypatch, encodes):
    plain = run(tmp_path, "plain")
    encoded_once = len(encodes)
    assert encoded_once == 48 + 16 + 16
    monkeypatch.setenv("NLPKIT_ENCODED_CACHE", str(tmp_path / "cache"))
    first = run(tmp_path, "first")
    assert len(encodes) == 2 * encoded_once and len(list((tmp_path / "cache").glob("*.pt"))) == 3
    assert first["test"] == plain["test"] and first["validation"] == plain["validation"]

    again = run(tmp_path, "again")  # the same configuration elsewhere: every split from the cache
    assert len(encodes) == 2 * encoded_once
    assert again["test"] == plain["test"] and again["validation"] == plain["validation"]
    run(tmp_path, "other-lr", "--set", "train.lr=0.05")  # a trial with another learning rate: same features
    assert len(encodes) == 2 * encoded_once

    run(tmp_path, "other-vocab", "--set", "models.lstm.vocab_size=150")  # another vocabulary: encoded afresh
    assert len(encodes) == 3 * encoded_once and len(list((tmp_path / "cache").glob("*.pt"))) == 6
