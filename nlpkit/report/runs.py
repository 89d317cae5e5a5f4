"""Finding and reading finished run folders for reports (``nlpkit report`` and the end-of-run summary).

A report is built from what runs leave on disk (``results.json``, ``metrics.jsonl``, ``predictions.jsonl``),
never from live objects, so any set of old runs can be compared later. A run is its ``results.json`` contents
plus ``"run_dir"``.

:func:`identify` says what may be compared with what. A report section is one data set (task, dataset plugin,
its data_dir and dataset options, read from the run folder's ``recipe.yaml``); within a section a "model" is one
configuration (the entry's label and its settings hash), so runs of two configurations are never averaged as seeds
of one. Every table, figure and test groups by these two keys, so none of them can mix data sets or settings.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from nlpkit.config.recipe import COSMETIC, flatten, settings_hash
from nlpkit.errors import NlpkitError
from nlpkit.run.folders import results_problem

Run = dict[str, Any]
# Folders of experiment trackers' own stores (MLflow's artifacts, beside the runs): they hold copies of run files
# (results.json, recipe.yaml) that are not runs of their own.
TRACKER_STORES = {"mlartifacts", "mlruns"}


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
            dirs[:] = sorted(d for d in dirs if d not in TRACKER_STORES)
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
        if results.get("test_split") == "skipped":  # a sweep's trial (validation only): its sweep section shows it
            continue
        runs.append(normalize({**results, "run_dir": str(path)}))
    return identify(runs), skipped


def normalize(run: Run) -> Run:
    """Fill the identity fields a report groups by, so old or hand-made results still group correctly."""
    # Grouping keys must be plain strings: a missing dataset would otherwise drop rows from groupby.
    for key in ("task", "dataset", "model", "task_kind"):
        run[key] = "" if run.get(key) is None else str(run[key])
    run.setdefault("section", json.dumps([run["task"], run["dataset"], None, {}]))  # identify() refines these
    run.setdefault("section_title", f"{run['task']} — {run['dataset']}" if run["dataset"] else run["task"])
    run.setdefault("main_metric", next(iter(scalars(run.get("test"))), ""))
    run.setdefault("greater_is_better", True)
    return run


def resolved_settings(run: Run) -> dict[str, Any] | None:
    """The run's resolved configuration (its folder's ``recipe.yaml``), or None when there is none to read."""
    path = Path(run["run_dir"]) / "recipe.yaml" if run.get("run_dir") else None
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) if path and path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return settings if isinstance(settings, dict) and isinstance(settings.get("task"), dict) else None


def _data_location(entry: Mapping[str, Any]) -> str:
    """Where a data set's files are, for a section title: its data_dir, else the folder of its files."""
    if entry.get("data_dir"):
        return str(entry["data_dir"])
    options = entry.get("dataset_options") or {}
    files = [str(options[k]) for k in ("train", "validation", "test") if isinstance(options.get(k), str)]
    folders = {str(Path(f).parent) if Path(f).parent != Path(".") else f for f in files}
    return ", ".join(sorted(folders))


def _differences(settings: list[dict[str, Any] | None], ignore: Iterable[str] = ()) -> list[list[str]]:
    """For each of several flattened settings, the "key=value" items in which they differ (short key names)."""
    known = [s for s in settings if s is not None]
    keys = sorted({k for s in known for k in s} - set(ignore))
    differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in known}) > 1]
    short = {k: k.rsplit(".", 1)[-1] for k in differ}
    if len(set(short.values())) < len(short):  # the same leaf name twice: say which part each is under
        short = {k: k.split(".", 1)[-1] for k in differ}
    return [[f"{short[k]}={s.get(k, '–')}" for k in differ] if s is not None else [] for s in settings]


def identify(runs: list[Run]) -> list[Run]:
    """Give every run its report section and its configuration name (see the module's docstring).

    Sets ``section`` (a key), ``section_title`` (e.g. "classification — text_files (data/trec)"),
    ``settings_hash`` (results.json's, else computed from recipe.yaml), ``model_label`` (the recipe entry's name)
    and ``model``: the label, or where one label has several configurations in a section, the label with the
    settings that tell them apart (e.g. "lstm (lr=0.003)"). Returns ``runs``."""
    for run in runs:
        run.setdefault("model_label", run["model"])
        settings = resolved_settings(run)
        entry = settings["task"] if settings else {}
        data = [run["task"], run["dataset"], entry.get("data_dir"), entry.get("dataset_options") or {}]
        run["section"] = json.dumps(data, sort_keys=True, default=str)
        location = _data_location(entry)
        title = f"{run['task']} — {run['dataset']}" if run["dataset"] else run["task"]
        title = f"{entry['id']}: {title}" if entry.get("id") else title  # the recipe's own name for the data set
        run["section_title"] = f"{title} ({location})" if location else title
        run["_settings"] = flatten(json.loads(json.dumps(settings, default=str))) if settings else None
        if not run.get("settings_hash") and settings:
            run["settings_hash"] = settings_hash(settings)
    _tell_sections_apart(runs)
    for section in {r["section"] for r in runs}:
        members = [r for r in runs if r["section"] == section]
        for label in {r["model_label"] for r in members}:
            _name_configurations([r for r in members if r["model_label"] == label])
    for run in runs:
        del run["_settings"]
    return runs


def _tell_sections_apart(runs: list[Run]) -> None:
    """Sections that would share a title get the dataset options in which they differ added to it."""
    by_title: dict[str, dict[str, Run]] = {}
    for run in runs:
        by_title.setdefault(run["section_title"], {}).setdefault(run["section"], run)
    for title, sections in by_title.items():
        if len(sections) < 2:
            continue
        options = [flatten(json.loads(key)[3]) for key in sections]
        named = {key: f"{title[:-1]}; {', '.join(d)})" if title.endswith(")") else f"{title} ({', '.join(d)})"
                 for key, d in zip(sections, _differences(options))}
        for run in runs:
            if run["section"] in named and run["section_title"] == title:
                run["section_title"] = named[run["section"]]


def _has_repeated_seeds(runs: list[Run]) -> bool:
    seeds = [str(r.get("seed")) for r in runs]
    return len(set(seeds)) < len(seeds)


def _configurations(runs: list[Run]) -> dict[tuple[str, str, str], list[Run]]:
    """Runs of one label grouped by configuration: (settings hash, "", "") keys. Folders of one configuration
    that share a seed (the same settings run by two recipes) are not seeds of one another: they are kept apart
    by recipe, ("recipe", name), or failing that by folder, ("run", path)."""
    configs: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        configs.setdefault((run.get("settings_hash") or "unknown", "", ""), []).append(run)  # unknown: assumed one
    for key in [k for k, members in configs.items() if _has_repeated_seeds(members)]:
        members = configs.pop(key)
        recipes: dict[str, list[Run]] = {}
        for run in members:
            recipes.setdefault(str(run.get("recipe")), []).append(run)
        for recipe, rs in recipes.items():
            if _has_repeated_seeds(rs):
                for run in rs:
                    configs[(key[0], "run", str(run.get("run_dir")))] = [run]
            else:
                configs[(key[0], "recipe", recipe)] = rs
    return configs


def _name_configurations(runs: list[Run]) -> None:
    """Runs of one label in one section: one name per configuration; never two runs of one seed under one name."""
    configs = _configurations(runs)
    if len(configs) < 2:
        return
    ignore = COSMETIC | {"seed", "recipe", "label"}
    differences = _differences([members[0]["_settings"] for members in configs.values()], ignore)
    names: list[str] = []
    for (hash_, kind, value), differ in zip(configs, differences):
        parts = differ[:3] + ([f"+{len(differ) - 3} more"] if len(differ) > 3 else [])
        parts += [f"{kind} {value}"] if kind else []
        names.append(f"{runs[0]['model_label']} ({', '.join(parts or [f'settings {hash_}'])})")
    for i, key in enumerate(configs):  # still alike (e.g. settings unknown for one): add the hash
        if names.count(names[i]) > 1:
            names[i] = f"{names[i][:-1]}, settings {key[0]})"
    for name, members in zip(names, configs.values()):
        for run in members:
            run["model"] = name


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
