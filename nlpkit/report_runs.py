"""Finding and reading finished run folders for reports (``nlpkit report`` and the end-of-run summary).

A report is built from what runs leave on disk (``results.json``, ``metrics.jsonl``, ``predictions.jsonl``),
never from live objects, so any set of old runs can be compared later. A run is its ``results.json`` contents
plus ``"run_dir"``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from nlpkit.errors import NlpkitError
from nlpkit.runs import results_problem

Run = dict[str, Any]


def discover_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Find run folders under ``paths``: (finished, unfinished).

    A folder with ``results.json`` is finished; one with ``run.json`` or ``recipe.yaml`` but no results and
    no run folders below it is unfinished (still training, or crashed). Each path may be a run folder or
    any folder above run folders, e.g. ``runs/agnews``.
    """
    finished: dict[Path, None] = {}  # dicts keep discovery order and drop duplicates
    candidates: dict[Path, None] = {}
    for path in map(Path, paths):
        path = path.parent if path.name == "results.json" else path
        if not path.is_dir():
            raise NlpkitError(f"No such run folder: {path}")
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            here = Path(folder).resolve()
            if "results.json" in files:
                finished[here] = None
                dirs.clear()  # a run folder holds no other runs (only e.g. model/ weights)
            elif "run.json" in files or "recipe.yaml" in files:
                candidates[here] = None
    runs = list(finished) + list(candidates)
    unfinished = [c for c in candidates if not any(r != c and c in r.parents for r in runs)]
    return list(finished), unfinished


def load_runs(paths: Iterable[str | Path]) -> tuple[list[Run], list[Path]]:
    """Load every finished run under ``paths``; returns (runs, skipped folders).

    Unfinished or unreadable runs are skipped with a message on stderr rather than failing, since a report
    is often made while other runs still train.
    """
    finished, skipped = discover_runs(paths)
    for path in skipped:
        print(f"skipping unfinished run {path}", file=sys.stderr)
    runs = []
    for path in finished:
        problem = results_problem(path / "results.json")  # empty, not JSON, or not a results object
        if problem:
            print(f"skipping run {path}: its results.json is {problem}", file=sys.stderr)
            skipped.append(path)
            continue
        results = json.loads((path / "results.json").read_text(encoding="utf-8"))
        runs.append(normalize({**results, "run_dir": str(path)}))
    return runs, skipped


def normalize(run: Run) -> Run:
    """Fill the identity fields a report groups by, so old or hand-made results still group correctly."""
    # Grouping keys must be plain strings: a missing dataset would otherwise drop rows from groupby.
    for key in ("task", "dataset", "model", "task_kind"):
        run[key] = "" if run.get(key) is None else str(run[key])
    run.setdefault("main_metric", next(iter(scalars(run.get("test"))), ""))
    run.setdefault("greater_is_better", True)
    return run


def scalars(metrics: Any) -> dict[str, float]:
    """The numeric entries of a metrics dict (booleans and nested details are not metrics)."""
    if not isinstance(metrics, Mapping):
        return {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def seed_key(seed: Any) -> tuple[int, float, str]:
    """Sort key for seeds: numbers in numeric order, then anything else as text."""
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def by_model(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by model (models sorted), each model's runs in seed order."""
    out: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r["model"], seed_key(r.get("seed")))):
        out.setdefault(run["model"], []).append(run)
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a missing file reads as empty, since old runs may lack e.g. predictions."""
    path = Path(path)
    if not path.is_file():
        return []
    return _read_jsonl_cached(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=32)
def _read_jsonl_cached(path: str, _mtime_ns: int) -> list[dict[str, Any]]:
    # Cached because tables, figures and significance tests all read the same predictions file;
    # the mtime in the key makes a rewritten file read afresh.
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def predictions(run: Run) -> list[dict[str, Any]]:
    """The run's test-set predictions (one dict per example, in test-set order)."""
    return read_jsonl(Path(run["run_dir"]) / "predictions.jsonl") if run.get("run_dir") else []
