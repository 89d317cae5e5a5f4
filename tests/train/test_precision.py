"""Issue #14 point 8: the suite's claims hold on both CPU kinds (with and without native bf16), and the bf16
paths (autocast in the training loop, the fast BERT encoder under it) train and save/load when forced."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from nlpkit.config.recipe import parse_recipe
from nlpkit.plugins import registry
from nlpkit.run.engine import execute, load_splits
from nlpkit.run.predict import load_run, predict_examples
from nlpkit.train.hardware import device_description, resolve_precision

RECIPE = """\
name: precision
output: {out}/runs
reports: {out}/reports
task:
  name: classification
  dataset: toy_topics
  dataset_options: {{train_size: 96, eval_size: 24}}
models:
  {model}: {options}
train: {{max_steps: {steps}, batch_size: 16, log_every: 1, progress: false, precision: {precision}}}
seeds: [1]
"""
LSTM = "{vocab_size: 200, embedding_dim: 16, hidden_size: 16, lr: 3.0e-2, dropout: 0.0}"


def run(tmp_path, precision: str, model: str = "lstm", options: str = LSTM, steps: int = 36):
    text = textwrap.dedent(RECIPE.format(out=tmp_path, model=model, options=options, steps=steps,
                                         precision=precision))
    spec = parse_recipe(text, tmp_path / "precision.yaml").runs[0]
    results = execute(spec)
    losses = [json.loads(line)["loss"] for line in (spec.folder / "metrics.jsonl").read_text().splitlines()
              if '"train"' in line]
    return spec, results, losses


def falls(losses: list[float]) -> bool:
    """The mean of the last three logged losses well below that of the first three (single batches are noisy)."""
    return sum(losses[-3:]) < 0.7 * sum(losses[:3])


@pytest.mark.parametrize("prefers_fp32", [False, True])
def test_auto_precision_follows_the_cpu_kind(cpu_kind, prefers_fp32):
    cpu = torch.device("cpu")
    expected = "bf16" if cpu_kind and not prefers_fp32 else "fp32"
    assert resolve_precision("auto", cpu, prefers_fp32) == expected
    assert resolve_precision("fp32", cpu, prefers_fp32) == "fp32"  # what the comparing tests pin
    assert ("native bf16" in device_description(cpu)) is cpu_kind


def test_a_run_with_auto_precision_trains_on_either_cpu_kind(cpu_kind, tmp_path):
    """What a new user's first recipe does on each machine: auto resolves per CPU kind, the run trains in it."""
    _, results, losses = run(tmp_path, "auto")
    assert results["precision"] == ("bf16" if cpu_kind else "fp32")
    assert falls(losses), losses


@pytest.mark.parametrize("model", ["lstm", "bert"])
def test_forced_bf16_trains_and_saves(tmp_path, tiny_bert, model, monkeypatch):
    """bf16 autocast on CPU (the loop's; for bert also the fast encoder under it): the loss falls, and the saved
    model reloads and predicts what the run wrote for the test split."""
    from nlpkit.run import engine

    made = []
    make = engine.make_accelerator
    monkeypatch.setattr(engine, "make_accelerator", lambda *a: made.append(make(*a)) or made[-1])
    options = LSTM if model == "lstm" else f"{{pretrained: '{tiny_bert}', max_length: 24, lr: 3.0e-3}}"
    spec, results, losses = run(tmp_path, "bf16", model, options)
    assert results["precision"] == "bf16" and [a.mixed_precision for a, _ in made] == ["bf16"]  # autocast
    assert falls(losses), losses
    task, loaded = load_run(spec.folder)
    _, examples = load_splits(spec.task, registry())
    saved = [json.loads(line)["prediction"] for line in (spec.folder / "predictions.jsonl").read_text().splitlines()]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the run predicted under bf16 autocast too
        again = predict_examples(loaded, examples["test"])
    assert [task.spec.labels[p["prediction"]] for p in again] == saved
