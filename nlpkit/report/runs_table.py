"""``nlpkit runs``: run folders as a table (what ran, its status, its main metric, its speed), the settings that
differ between them (``--changed``), and the differences of two runs (``nlpkit runs diff A B``).

Everything is read from the folders alone (recipe.yaml, results.json, failure.json), like a report, so finished,
unfinished and failed runs of any recipes can be listed side by side while others still train.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from nlpkit.config.recipe import flatten
from nlpkit.errors import NlpkitError
from nlpkit.report.runs import discover_runs, scalars
from nlpkit.run.folders import run_status

COLUMNS = ("run", "task", "dataset", "model", "seed", "status", "metric", "value", "train_seconds", "examples_per_s")
# settings that the table shows in columns of their own, or that only restate the others
NOT_A_DIFFERENCE = {"settings_hash", "seed", "label", "task.name", "task.dataset"}


def _read(path: Path, parse: Any) -> Any:
    try:
        return parse(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError):
        return None


def settings_of(folder: Path) -> dict[str, Any]:
    """The run's resolved settings (its recipe.yaml) with dotted keys; {} when there is none to read."""
    settings = _read(Path(folder) / "recipe.yaml", yaml.safe_load)
    return flatten(settings) if isinstance(settings, dict) else {}


def run_row(folder: Path) -> dict[str, Any]:
    """One run folder as a table row: what ran (results.json, else recipe.yaml), how it ended, how well and fast."""
    folder = Path(folder)
    settings = settings_of(folder)
    status = {"finished": "finished", "failed": "failed"}.get(run_status(folder), "unfinished")
    results = _read(folder / "results.json", json.loads) if status == "finished" else None
    results = results if isinstance(results, dict) else {}
    metric = results.get("main_metric", "")
    return {
        "run": folder.name,
        "task": results.get("task", settings.get("task.name", "")),
        "dataset": results.get("dataset", settings.get("task.dataset", "")),
        "model": results.get("model", settings.get("label", "")),
        "seed": results.get("seed", settings.get("seed", "")),
        "status": status,
        "metric": metric,
        "value": scalars(results.get("test")).get(metric) if metric else None,
        "train_seconds": results.get("train_seconds"),
        "examples_per_s": results.get("train_examples_per_s"),
        "folder": str(folder),
    }


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run folder under ``paths`` (run folders or folders above them), finished or not, sorted by path."""
    finished, unfinished = discover_runs(paths)
    folders = sorted(finished + unfinished)
    if not folders:
        raise NlpkitError(f"No run folders under {', '.join(map(str, paths))} (a run folder holds recipe.yaml)")
    return folders


def distinct_names(folders: list[Path]) -> list[str]:
    """Each folder's name, with as many parent folders as it takes to tell the folders apart (two recipes may
    both hold classification-lstm-seed1)."""
    for depth in range(1, max(len(f.parts) for f in folders) + 1):
        names = ["/".join(f.parts[-depth:]) for f in folders]
        if len(set(names)) == len(names):
            return names
    return [str(f) for f in folders]


def changed_settings(folders: list[Path]) -> dict[str, list[Any]]:
    """The settings (dotted keys) whose values are not the same in every run of ``folders``: {key: values}."""
    settings = [settings_of(f) for f in folders]
    keys = sorted({k for s in settings for k in s} - NOT_A_DIFFERENCE)
    same = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in settings}) == 1]
    return {k: [s.get(k) for s in settings] for k in keys if k not in same}


def table(paths: list[str | Path], changed: bool = False) -> list[dict[str, Any]]:
    """The rows of ``nlpkit runs``; with ``changed``, each row also holds the settings that differ between runs."""
    folders = find_runs(paths)
    rows = [run_row(f) for f in folders]
    for row, name in zip(rows, distinct_names(folders)):
        row["run"] = name
    if changed:
        for key, values in changed_settings(folders).items():
            for row, value in zip(rows, values):
                row[key] = value
    return rows


def metrics_of(folder: Path) -> dict[str, Any]:
    """A run's comparable outcomes with dotted keys: test and best validation metrics, steps, time, speed, memory."""
    results = _read(Path(folder) / "results.json", json.loads)
    if not isinstance(results, dict):
        return {}
    out = {f"test.{k}": v for k, v in scalars(results.get("test")).items()}
    out |= {f"validation.{k}": v for k, v in scalars(results.get("validation")).items()}
    keys = ("steps", "train_seconds", "train_examples_per_s", "peak_memory_mb", "parameters")
    return out | {k: results[k] for k in keys if k in results}


def diff(a: str | Path, b: str | Path) -> dict[str, dict[str, list[Any]]]:
    """The settings and the metrics in which run folders ``a`` and ``b`` differ:
    {"settings": {key: [a, b]}, "metrics": {key: [a, b]}}."""
    for folder in (a, b):
        if not (Path(folder) / "recipe.yaml").is_file():
            raise NlpkitError(f"{folder}: not a run folder (it holds no recipe.yaml)")
    settings = changed_settings([Path(a), Path(b)])
    ma, mb = metrics_of(Path(a)), metrics_of(Path(b))
    metrics = {k: [ma.get(k), mb.get(k)] for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)}
    return {"settings": settings, "metrics": metrics}


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def render_table(rows: list[dict[str, Any]]) -> str:
    """Rows as aligned plain text (columns: COLUMNS, then any changed settings)."""
    headers = list(COLUMNS) + [k for k in rows[0] if k not in COLUMNS and k != "folder"] if rows else list(COLUMNS)
    cells = [[_cell(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def render_csv(rows: list[dict[str, Any]]) -> str:
    headers = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, headers, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()} for row in rows)
    return out.getvalue()


def render_diff(a: str | Path, b: str | Path, found: dict[str, dict[str, list[Any]]]) -> str:
    lines = [f"A: {a}", f"B: {b}"]
    for part in ("settings", "metrics"):
        lines.append(f"{part.capitalize()} that differ (A -> B):" if found[part] else f"{part.capitalize()}: the same")
        for key, (va, vb) in found[part].items():
            delta = f"  ({vb - va:+.4g})" if all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in (va, vb)) else ""
            lines.append(f"  {key}: {_cell(va)} -> {_cell(vb)}{delta}")
    return "\n".join(lines)
