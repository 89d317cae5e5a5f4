"""Warnings a reader of a run's numbers needs: results that are not what they seem.

A run records them in ``results.json`` under ``"warnings"`` (a list of sentences) and reports show them next to
the run's numbers. Each check reads only what the run produced (its validation curve, its test predictions), so
it works the same for every model and plugin.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# "Still improving": the last evaluation is the best so far and beat the one `WINDOW` evaluations before it by more
# than MIN_GAIN of its value (relative, so it reads the same for accuracy, F1 and BLEU; for loss-like metrics, a drop).
WINDOW = 2
MIN_GAIN = 0.02


def still_improving(curve: Sequence[float], greater_is_better: bool = True, metric: str = "metric",
                    min_gain: float = MIN_GAIN, window: int = WINDOW) -> str | None:
    """A warning when a validation curve was still climbing at its end (see ``MIN_GAIN``), else None.

    One evaluation tells nothing about a trend; with two, the last step is the window."""
    values = [float(v) for v in curve if v is not None]
    if len(values) < 2:
        return None
    sign = 1.0 if greater_is_better else -1.0
    last, earlier = values[-1], values[:-1]
    if any(sign * v >= sign * last for v in earlier):
        return None  # the best came earlier: the curve had flattened or turned
    before = values[-1 - min(window, len(earlier))]
    gain = sign * (last - before)
    if gain <= min_gain * max(abs(last), 1e-12):
        return None
    shown = " -> ".join(f"{v:.4g}" for v in values[-1 - min(window, len(earlier)):])
    return (f"still improving when training stopped: validation {metric} {shown} over the last evaluations, the "
            "best at the very end; more optimizer steps (or early stopping with a larger budget) would likely do "
            "better, so this run understates the model")


def never_predicted(labels: Sequence[str], gold: Sequence[int], predicted: Sequence[int],
                    ignore: Sequence[str] = ("O",), what: str = "classes") -> str | None:
    """A warning naming the classes present in the gold labels that the model never predicted, else None."""
    seen = set(predicted)
    counts = Counter(gold)
    missing = [(labels[i] if 0 <= i < len(labels) else str(i), n) for i, n in sorted(counts.items())
               if i not in seen and (labels[i] if 0 <= i < len(labels) else str(i)) not in ignore]
    if not missing:
        return None
    names = ", ".join(f"{name} ({n} in test)" for name, n in missing)
    return (f"never predicts these {what}, present in the test set: {names}; a collapsed or "
            "under-trained model can still score well on the frequent ones")


def validation_curve(metrics_log: Path, metric: str) -> list[float]:
    """The validation values of ``metric`` in a run's metrics.jsonl, in logged order."""
    path = Path(metrics_log)
    if not path.is_file():
        return []
    curve = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("split") == "validation" and isinstance(row.get(metric), (int, float)):
            curve.append(float(row[metric]))
    return curve


def run_warnings(metrics_log: Path, task: Any, examples: list[dict], predictions: list[dict],
                 notes: Sequence[str] = ()) -> list[str]:
    """Every warning for one finished run: the validation curve of ``task.main_metric``, classes the test
    predictions never use (classification labels; tags other than O), and ``notes`` from the engine."""
    out = list(notes)
    curve = validation_curve(metrics_log, task.main_metric)
    climbing = still_improving(curve, task.greater_is_better, task.main_metric)
    if climbing:
        out.append(climbing)
    labels = list(task.spec.labels) if getattr(task, "spec", None) else []
    if labels and task.kind == "classification":
        gold = [ex["label"] for ex in examples if "label" in ex]
        found = never_predicted(labels, gold, [p["prediction"] for p in predictions], ignore=())
    elif labels and task.kind == "tagging":
        gold = [t for ex in examples for t in ex.get("tags", [])]
        found = never_predicted(labels, gold, [t for p in predictions for t in p["prediction"]], what="tags")
    else:
        found = None
    return out + ([found] if found else [])
