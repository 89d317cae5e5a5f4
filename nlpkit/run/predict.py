"""Load a finished run's model and task, and predict on new input (``nlpkit predict``).

Only a finished run predicts (its results.json whole): an unfinished run's folder may hold a model that
never finished training. Inputs are refused, each by where it came from, when they hold nothing to predict on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nlpkit.contract import Model, Task
from nlpkit.errors import NlpkitError
from nlpkit.plugins import registry
from nlpkit.run.folders import results_problem


def finished_runs_under(folder: Path, depth: int = 2) -> list[Path]:
    """Finished run folders up to ``depth`` levels below ``folder`` (a recipe's folder, or the output folder
    above recipes), so that a user pointing at one is shown what to choose from."""
    found: list[Path] = []
    level = [Path(folder)]
    for _ in range(depth):
        level = sorted(p for parent in level for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        found += [p for p in level if (p / "model").is_dir() and results_problem(p / "results.json") is None]
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise NlpkitError(f"{path}: cannot be read ({type(err).__name__}: {err}); the run folder is damaged") from None
    if not isinstance(value, dict):
        raise NlpkitError(f"{path}: a JSON {type(value).__name__} where an object was expected; the run folder is "
                          "damaged")
    return value


def _culprit(model_dir: Path) -> Path:
    """The file of a saved model that cannot be read (JSON that does not parse, safetensors whose header or
    size is wrong), for the message; the folder itself when every file looks whole."""
    from safetensors import safe_open

    for path in sorted(model_dir.rglob("*")):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():
                        f.get_slice(key)
        except Exception:  # whatever the reader says, this file is the broken one
            return path
    return model_dir


def run_device(folder: Path, choice: str | None = None) -> torch.device:
    """Where to predict: ``choice`` (``--device``; one that is not here is an error), else the device the run
    trained on when this machine has it, else the CPU."""
    from nlpkit.train.hardware import device_problem, resolve_device

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
    """The task and model of the finished run in ``folder``, ready to predict (``prepare_inference(True)``): the
    model on the run's device (or ``device``) in the layout the speed rule picks there."""
    from nlpkit.train.hardware import use_device

    folder = Path(folder)
    if not folder.is_dir():
        raise NlpkitError(f"No such run folder: {folder}")
    if not (folder / "model").is_dir() and not (folder / "results.json").exists():
        runs = finished_runs_under(folder)
        if runs:
            listed = "\n  ".join(str(p) for p in runs)
            raise NlpkitError(f"{folder} holds {len(runs)} finished runs, not one; choose one:\n  {listed}")
        raise NlpkitError(f"{folder} is not a finished nlpkit run folder: no model/ and task.json, and no finished "
                          "runs below it")
    problem = results_problem(folder / "results.json")
    if problem:
        raise NlpkitError(f"{folder} is not a finished run (its results.json is {problem}): its model may be "
                          "half-trained. Run its recipe again to finish it, then predict.")
    for needed in (folder / "task.json", folder / "model" / "config.json"):
        if not needed.is_file():
            raise NlpkitError(f"{folder} is not a finished nlpkit run folder: {needed.relative_to(folder)} is missing")
    state = _read_json(folder / "task.json")
    config = _read_json(folder / "model" / "config.json")
    reg = registry()
    try:
        task = reg.task(state.get("task")).from_state(state)
    except NlpkitError:
        raise
    except Exception as err:
        raise NlpkitError(f"{folder / 'task.json'}: not a task state ({type(err).__name__}: {err})") from None
    model_cls = reg.model(config.get("plugin"))
    try:
        where = use_device(run_device(folder, device))  # before loading: bert's layout follows the device
        model = model_cls.load(folder / "model").to(where)
    except NlpkitError:
        raise
    except Exception as err:  # a plugin's loader on damaged files: say which file
        raise NlpkitError(f"{_culprit(folder / 'model')}: the saved model cannot be loaded "
                          f"({type(err).__name__}: {str(err)[:300]}); the run folder is damaged") from None
    model.eval()
    model.prepare_inference(True)  # the recipe's test-time settings (e.g. beam search), as for the test split
    return task, model


def parse_inputs(task: Task, inputs: list[tuple[str, str]]) -> list[dict]:
    """Examples for ``inputs`` ((where, text) pairs); every input with nothing to predict on (empty, only
    whitespace, or nothing left once the task has read it) is refused, each named by where it came from."""
    problems, examples = [], []
    for where, text in inputs:
        example = task.parse(text) if text.strip() else None
        if example is None or any(v in ("", [], None) for v in example.values()):
            problems.append(f"{where}: {'empty' if not text else 'only whitespace' if not text.strip() else repr(text)}"
                            f"{'' if example is None else ' leaves nothing to predict on'}")
        examples.append(example)
    if problems:
        raise NlpkitError("Nothing to predict on in:\n  " + "\n  ".join(problems))
    if not examples:
        raise NlpkitError("No inputs: give texts as arguments, '-' to read stdin, or --file PATH (one per line)")
    return examples


def read_lines(data: bytes, label: str) -> list[tuple[str, str]]:
    """One input per line of ``data`` (a file's or stdin's bytes), as (where, text) pairs."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise NlpkitError(f"{label}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None
    return [(f"{label}, line {i}", line) for i, line in enumerate(text.splitlines(), 1)]


def predict_examples(model: Model, examples: list[dict], batch_size: int = 32) -> list[dict]:
    from nlpkit.train.loop import _to_device

    device = next(model.parameters()).device
    out: list[dict] = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            features = [model.encode(ex) for ex in examples[start : start + batch_size]]
            batch = _to_device(model.collate(features), device, getattr(model, "host_inputs", ()))
            out.extend(model.predict(batch))
    return out
