"""Load a finished run's model and task, and predict on new input (``nlpkit predict``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nlpkit.contract import Model, Task
from nlpkit.errors import NlpkitError
from nlpkit.plugins import registry


def run_device(folder: Path, choice: str | None = None) -> torch.device:
    """Where to predict: ``choice`` (``--device``; one that is not here is an error), else the device the run
    trained on when this machine has it, else the CPU."""
    from nlpkit.hardware import device_problem, resolve_device

    if choice:
        problem = device_problem(choice)
        if problem:
            raise NlpkitError(f"--device: {problem}")
        return resolve_device(choice)
    try:
        trained_on = json.loads((folder / "results.json").read_text()).get("device_type", "cpu")
    except (OSError, ValueError, AttributeError):
        trained_on = "cpu"
    return resolve_device(trained_on if isinstance(trained_on, str) and not device_problem(trained_on) else "cpu")


def load_run(folder: str | Path, device: str | None = None) -> tuple[Task, Model]:
    """The run's task and model, the model on the run's device (or ``device``) in the layout the speed rule picks
    there."""
    from nlpkit.hardware import use_device

    folder = Path(folder)
    if not (folder / "model" / "config.json").exists() or not (folder / "task.json").exists():
        hint = " (it has not finished)" if folder.exists() and not (folder / "results.json").exists() else ""
        raise NlpkitError(f"{folder} is not a finished nlpkit run folder{hint}: no model/ and task.json")
    state = json.loads((folder / "task.json").read_text())
    config = json.loads((folder / "model" / "config.json").read_text())
    reg = registry()
    task = reg.task(state["task"]).from_state(state)
    where = use_device(run_device(folder, device))  # before loading: bert's layout follows the device
    model = reg.model(config["plugin"]).load(folder / "model").to(where)
    model.eval()
    return task, model


def predict_examples(model: Model, examples: list[dict], batch_size: int = 32) -> list[dict]:
    from nlpkit.training import _to_device

    device = next(model.parameters()).device
    out: list[dict] = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            features = [model.encode(ex) for ex in examples[start : start + batch_size]]
            batch = _to_device(model.collate(features), device, getattr(model, "host_inputs", ()))
            out.extend(model.predict(batch))
    return out
