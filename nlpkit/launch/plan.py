"""The runs of a recipe, addressable: each one's id, folder, settings hash and status (``nlpkit plan``), and the
selection of some of them (``--only ID``, ``--shard i/n``) that a cluster job or a person runs."""

from __future__ import annotations

import re
from typing import Any

from nlpkit.config.recipe import RunSpec
from nlpkit.errors import NlpkitError, did_you_mean
from nlpkit.run.folders import failure_of, is_finished, saved_settings_hash
from nlpkit.train.checkpoint import latest_step


def status_of(spec: RunSpec) -> tuple[str, str]:
    """(status, detail) of a run as its folder holds it now: "finished", "unfinished" (detail: resumes at step
    N), "failed" (detail: the error in failure.json), "to run", or "other settings" (the folder holds a run made
    with other settings: it moves aside and the recipe's settings run)."""
    folder = spec.folder
    saved = saved_settings_hash(folder)
    if saved not in (None, spec.settings_hash):
        return "other settings", f"holds a run with settings {saved}: moves aside, runs {spec.settings_hash}"
    if is_finished(folder):
        return "finished", ""
    failure = failure_of(folder)
    if failure is not None:
        step = latest_step(folder / "checkpoints")
        return "failed", failure + (f" (resumes at step {step})" if step else "")
    step = latest_step(folder / "checkpoints")
    if step:
        return "unfinished", f"resumes at step {step}"
    return "to run", ""


def plan_rows(runs: list[RunSpec]) -> list[dict[str, Any]]:
    """One row per run, in recipe order (task x model entry x seed): what ``nlpkit plan --json`` prints."""
    rows = []
    for spec in runs:
        status, detail = status_of(spec)
        rows.append({"id": spec.name, "task": spec.task.name, "dataset": spec.task.dataset, "model": spec.label,
                     "plugin": spec.model, "seed": spec.seed, "folder": str(spec.folder),
                     "settings_hash": spec.settings_hash, "status": status, "detail": detail})
    return rows


_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) -> (i, n), or a clear error."""
    match = _SHARD.match(text or "")
    if not match:
        raise NlpkitError(f"--shard {text!r}: expected i/n, shard i of n (1 <= i <= n), e.g. --shard 2/4")
    i, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= i <= n:
        raise NlpkitError(f"--shard {text}: i must be between 1 and n, and n at least 1 (got i={i}, n={n})")
    return i, n


def in_shard(position: int, shard: tuple[int, int]) -> bool:
    """Round robin over the recipe's order: the run at 0-based ``position`` belongs to shard
    ``position % n + 1``. Every run is in exactly one shard, and a shard gets every model and seed in turn,
    so shards take about as long as each other."""
    i, n = shard
    return position % n == i - 1


def select(runs: list[RunSpec], only: tuple[str, ...] | list[str] = (), shard: str | None = None) -> list[RunSpec]:
    """The runs named by ``only`` (ids; all when empty) that fall in ``shard`` ("i/n"; all when None), in recipe
    order. An unknown id is an error naming the closest id and listing them all."""
    ids = [spec.name for spec in runs]
    unknown = [name for name in only if name not in ids]
    if unknown:
        lines = [f"--only {name}: no run with this id in the recipe.{did_you_mean(name, ids)}" for name in unknown]
        raise NlpkitError("\n".join(lines) + "\nThe recipe's run ids (`nlpkit plan RECIPE`):\n  " + "\n  ".join(ids))
    wanted = set(only)
    parsed = parse_shard(shard) if shard is not None else None
    return [spec for position, spec in enumerate(runs)
            if (not wanted or spec.name in wanted) and (parsed is None or in_shard(position, parsed))]
