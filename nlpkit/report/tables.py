"""The numbers of a report: a tidy frame of runs, mean ± std over seeds, and the tables built from them.

Tables are format-agnostic (:class:`Table`: cell text plus which cells are best); ``nlpkit.report.render``
turns them into Markdown or HTML, escaping every cell, since cells hold data (labels, sample sentences).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nlpkit.report.runs import Run, predictions, scalars, seed_key

BASE_COLUMNS = ["recipe", "task", "task_kind", "dataset", "section_title", "model", "seed", "main_metric",
                "greater_is_better", "model_label", "settings_hash", "section"]
GROUP = ["task", "dataset", "section", "section_title", "model"]  # one configuration on one data set
COST_COLUMNS = ["train_seconds", "train_examples_per_s", "train_tokens_per_s", "peak_memory_mb", "parameters",
                "device", "precision", "steps", "epochs"]
NUMERIC_COST = ["train_seconds", "train_examples_per_s", "train_tokens_per_s", "peak_memory_mb", "parameters",
                "steps", "epochs"]
SPEED_COLUMNS = ["train_examples_per_s", "train_tokens_per_s"]
RESERVED = set(BASE_COLUMNS + COST_COLUMNS + ["run_dir"])
# (column, header, scale, greater is better) of the cost table; None: neither (a model's size is a property,
# not a score), so never marked best.
COST_TABLE = [("train_seconds", "train time (s)", 1.0, False), ("train_examples_per_s", "examples/s", 1.0, True),
              ("train_tokens_per_s", "tokens/s", 1.0, True), ("peak_memory_mb", "peak memory (MB)", 1.0, False),
              ("parameters", "parameters (M)", 1e-6, None)]
SAMPLES = 5


@dataclass
class Table:
    """A format-agnostic table: cell text plus which (row, column) cells to mark as best."""

    header: list[str]
    rows: list[list[str]]
    best: set[tuple[int, int]] = field(default_factory=set)


# ---------------------------------------------------------------- the frame of runs

def results_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One tidy row per run: identity, every scalar test metric (its own column), cost, run folder.

    A metric named like a run field gets a ``test_`` prefix in the frame (NER's "precision" would clash with
    the run's number format, e.g. "fp32"); tables still show it by its own name.
    """
    rows, metrics = [], {}
    for run in runs:
        row = {c: run.get(c) for c in BASE_COLUMNS}
        for name, value in scalars(run.get("test")).items():
            name = f"test_{name}" if name in RESERVED else name
            metrics.setdefault(name, None)
            row[name] = value
        rows.append(row | {c: run.get(c) for c in COST_COLUMNS} | {"run_dir": run.get("run_dir")})
    frame = pd.DataFrame(rows, columns=BASE_COLUMNS + list(metrics) + COST_COLUMNS + ["run_dir"])
    for column in list(metrics) + NUMERIC_COST:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values(["task", "dataset", "section_title", "model", "seed"], kind="stable",
                             ignore_index=True)


def display(column: str) -> str:
    """A frame column's name as tables show it (without the clash-avoiding ``test_`` prefix)."""
    return column[5:] if column.startswith("test_") and column[5:] in RESERVED else column


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The test-metric columns of a :func:`results_frame` that hold at least one value."""
    return [c for c in frame.columns if c not in RESERVED and frame[c].notna().any()]


def aggregate(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and sample std (ddof=1: seeds are a sample of possible runs) per configuration on one data set.

    Returns columns task, dataset, section, section_title, model, n_seeds, seeds, then ``<column>_mean`` and
    ``<column>_std`` for each of ``columns`` (default: every test metric and the speed columns). With one seed
    the std is NaN. A "model" is a configuration (``report_runs.identify``), so seeds of one are averaged, never
    two configurations or two data sets.
    """
    columns = list(columns) if columns is not None else metric_columns(frame) + SPEED_COLUMNS
    grouped = frame.groupby(GROUP, sort=True, dropna=False)
    out = grouped.size().rename("n_seeds").to_frame()
    out["seeds"] = grouped["seed"].agg(lambda s: " ".join(str(x) for x in sorted(s, key=seed_key)))
    for column in columns:
        out[f"{column}_mean"] = grouped[column].mean()
        out[f"{column}_std"] = grouped[column].std(ddof=1)
    return out.reset_index()


# ---------------------------------------------------------------- mean ± std tables

def _lower_is_better(metric: str, main_metric: str, greater_is_better: bool) -> bool:
    if metric == main_metric:
        return not greater_is_better
    return metric in {"ter", "wer", "cer"} or any(w in metric for w in ("loss", "perplexity", "error"))


def _decimals(values: Iterable[float]) -> int:
    # One precision per column, chosen from its largest value, so a column reads consistently.
    largest = max((abs(v) for v in values if np.isfinite(v)), default=0.0)
    return 0 if largest >= 1000 else 2 if largest >= 1 else 4


def _mean_std(mean: float, std: float, n: int, decimals: int) -> str:
    if not np.isfinite(mean):
        return "–"
    text = f"{mean:,.{decimals}f}"
    return text + f" ± {std:,.{decimals}f}" if n > 1 and np.isfinite(std) else text


def stats_table(frame: pd.DataFrame, columns: Sequence[tuple[str, str, float, bool | None]]) -> Table:
    """A row per model of ``frame`` (one task group): mean ± std over seeds of each of ``columns``, given as
    (column, header, scale, lower is better; None: neither, nothing marked).

    The best mean per column is marked (all tied ones), unless every model with a value shares it.
    """
    agg = aggregate(frame, [c for c, *_ in columns])
    table = Table(["model", "seeds", *(header for _, header, _, _ in columns)],
                  [[str(row["model"]), str(row["seeds"])] for _, row in agg.iterrows()])
    for j, (column, _, scale, lower) in enumerate(columns, start=2):
        means = agg[f"{column}_mean"].to_numpy(float) * scale
        stds = agg[f"{column}_std"].to_numpy(float) * scale
        decimals = _decimals(means)
        for i, (mean, std) in enumerate(zip(means, stds, strict=True)):
            table.rows[i].append(_mean_std(mean, std, int(agg["n_seeds"].iloc[i]), decimals))
        finite = means[np.isfinite(means)]
        if lower is None:
            continue
        best = (finite.min() if lower else finite.max()) if len(finite) else math.nan
        marked = {(i, j) for i, m in enumerate(means) if np.isfinite(m) and math.isclose(m, best)}
        if len(marked) < len(finite):  # a value every model shares is no one's best
            table.best |= marked
    return table


def metric_specs(frame: pd.DataFrame) -> list[tuple[str, str, float, bool]]:
    """:func:`stats_table` columns for the test metrics of one task group, the main metric first."""
    main, gib = str(frame["main_metric"].iloc[0]), bool(frame["greater_is_better"].iloc[0])
    metrics = sorted(metric_columns(frame), key=lambda m: display(m) != main)  # then in logged order
    return [(m, display(m) + (" (main)" if display(m) == main else ""), 1.0,
             _lower_is_better(display(m), main, gib)) for m in metrics]


def metric_table(frame: pd.DataFrame) -> Table:
    """Test metrics of one (task, dataset) group: a row per model, mean ± std over seeds, best marked."""
    return stats_table(frame, metric_specs(frame))


def cost_table(frame: pd.DataFrame) -> Table:
    """Time, speed, memory and size per model (mean ± std over seeds; best marked), plus device/precision."""
    columns = [(c, h, s, None if g is None else not g) for c, h, s, g in COST_TABLE if frame[c].notna().any()]
    table = stats_table(frame, columns)
    groups = [group for _, group in frame.groupby("model", sort=True)]
    if "train time (s)" in table.header:  # the budget each time bought, beside it
        j = table.header.index("train time (s)") + 1
        budgets = [_budget(group) for group in groups]
        table.header.insert(j, "budget")
        for row, budget in zip(table.rows, budgets, strict=True):
            row.insert(j, budget)
        table.best = {(i, k + (k >= j)) for i, k in table.best}
        if len({b for b in budgets if b != "–"}) > 1:  # times of different budgets: no "fastest"
            table.best = {(i, k) for i, k in table.best if k != j - 1}
    table.header += ["device", "precision"]
    for row, group in zip(table.rows, groups, strict=True):
        row += [", ".join(sorted({_device(v) for v in group[c].dropna()})) or "–" for c in ("device", "precision")]
    return table


def _budget(group: pd.DataFrame) -> str:
    """The optimizer steps (and epochs) a model's runs trained for: '1,500 steps (1.2 epochs)'."""
    steps, epochs = group["steps"].dropna(), group["epochs"].dropna()
    if steps.empty:
        return "–"
    text = " / ".join(f"{int(s):,}" for s in sorted(set(steps))) + " steps"
    return text + (f" ({epochs.mean():.3g} epochs)" if not epochs.empty else "")


def _device(value: Any) -> str:
    """A device description; old results said '(1 threads)'."""
    return re.sub(r"\(1 threads\b", "(1 thread", str(value))


def compatibility_table(models: Mapping[str, Sequence[str]], tasks: Mapping[str, str]) -> Table:
    """Which installed model serves which installed task: models {name: [task kinds served]}, tasks {name: kind}."""
    header = ["model", *(f"{task} ({kind})" for task, kind in tasks.items())]
    rows = [[model, *("✓" if kind in set(kinds) else "–" for kind in tasks.values())]
            for model, kinds in sorted(models.items())]
    return Table(header, rows)


# ---------------------------------------------------------------- sample predictions

def _clip(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _entities(tokens: Sequence[str], tags: Sequence[str]) -> str:
    from seqeval.metrics.sequence_labeling import get_entities

    found = [f"{kind}: {' '.join(map(str, tokens[s:e + 1]))}" for kind, s, e in get_entities(list(tags))]
    return "; ".join(found) or "–"


def _input_and_gold(kind: str, example: dict[str, Any]) -> list[Any]:
    if kind == "classification":
        return [example.get("text", ""), example.get("label", "")]
    if kind == "tagging":
        tokens = example.get("tokens", [])
        return [" ".join(map(str, tokens)), _entities(tokens, example.get("gold", []))]
    return [example.get("source", ""), example.get("reference", "")]


def _prediction_cell(kind: str, p: dict[str, Any]) -> str:
    if kind == "classification":
        return f"{'✓' if p.get('prediction') == p.get('label') else '✗'} {p.get('prediction', '–')}"
    if kind == "tagging":
        mark = "✓" if p.get("prediction") == p.get("gold") else "✗"
        return f"{mark} {_entities(p.get('tokens', []), p.get('prediction', []))}"
    return str(p.get("hypothesis", "–"))


def samples_table(kind: str, runs_by_model: Mapping[str, list[Run]], limit: int = SAMPLES) -> Table | None:
    """The first test examples with each model's prediction (first seed), marked right/wrong where exact."""
    first = {model: predictions(runs[0]) for model, runs in runs_by_model.items()}
    reference = next((p for p in first.values() if p), None)
    if not reference:
        return None
    table = Table(["#", "input", "gold", *first], [])
    for i, example in enumerate(reference[:limit]):
        row = _input_and_gold(kind, example)
        row += [_prediction_cell(kind, preds[i] if i < len(preds) else {}) for preds in first.values()]
        table.rows.append([str(example.get("index", i)), *(_clip(c) for c in row)])
    return table
