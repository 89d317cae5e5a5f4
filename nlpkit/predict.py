"""Load a finished run's model and task, and predict on new input (``nlpkit predict``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nlpkit.contract import Model, Task
from nlpkit.errors import NlpkitError
from nlpkit.plugins import registry


def load_run(folder: str | Path) -> tuple[Task, Model]:
    folder = Path(folder)
    if not (folder / "model" / "config.json").exists() or not (folder / "task.json").exists():
        hint = " (it has not finished)" if folder.exists() and not (folder / "results.json").exists() else ""
        raise NlpkitError(f"{folder} is not a finished nlpkit run folder{hint}: no model/ and task.json")
    state = json.loads((folder / "task.json").read_text())
    config = json.loads((folder / "model" / "config.json").read_text())
    reg = registry()
    task = reg.task(state["task"]).from_state(state)
    model = reg.model(config["plugin"]).load(folder / "model")
    model.eval()
    model.prepare_inference(True)  # the recipe's test-time settings (e.g. beam search), as for the test split
    return task, model


def predict_examples(model: Model, examples: list[dict], batch_size: int = 32) -> list[dict]:
    out: list[dict] = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            features = [model.encode(ex) for ex in examples[start : start + batch_size]]
            out.extend(model.predict(model.collate(features)))
    return out
