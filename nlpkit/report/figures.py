"""Figures for comparison reports (used by :mod:`nlpkit.report.write`).

Every function takes finished runs (``results.json`` contents plus ``"run_dir"``) grouped by model,
writes one PNG and returns its path, or None when the runs hold no data for that figure, so a report
over old or partial run folders still renders. Figures are drawn on ``matplotlib.figure.Figure``
objects rather than through pyplot: that needs no backend switch (it always renders with Agg),
keeps no global state and so leaks no figures when a report is built inside a long-lived process.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlpkit.report.runs import Run, predictions, read_jsonl

DPI = 100
# Source-length buckets (upper edges, whitespace tokens) for BLEU by length, as in Bahdanau et al. (2015), Fig. 2;
# the open-ended top bucket starts low enough to hold MIN_BUCKET sentences (BLEU on a handful is noise).
LENGTH_EDGES = (10, 15, 20, 30, 40, 50)
MIN_BUCKET = 30
MARKED_POINTS = 12  # a curve with at most this many points gets a marker on each


def slug(*parts: str) -> str:
    """A file-name-safe name built from task/dataset/model names, which come from data."""
    cleaned = (re.sub(r"[^A-Za-z0-9_.-]+", "-", str(p)).strip("-.") for p in parts)
    return "_".join(c for c in cleaned if c) or "x"


def _plain(text: Any) -> str:
    """Keep matplotlib from reading data text (labels, tokens) as mathtext: a pair of '$' would."""
    return str(text).replace("$", r"\$")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # tokens in scripts the default font lacks only warn about glyphs
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(path, dpi=DPI, format="png")
    return path


def _curve(run: Run, split: str, key: str) -> pd.Series | None:
    rows = [
        (r["step"], float(r[key]))
        for r in read_jsonl(Path(run["run_dir"]) / "metrics.jsonl")
        if r.get("split") == split and "step" in r and isinstance(r.get(key), (int, float))
    ]
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["step", "value"]).groupby("step")["value"].mean()


def learning_curves(runs_by_model: dict[str, list[Run]], main_metric: str, title: str, path: Path) -> Path | None:
    """Training loss and validation main metric against steps: a line per model (mean over seeds),
    shaded between the seeds' minimum and maximum, so seed variance is visible next to model differences."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    drawn = False
    panels = ((axes[0], "train", "loss", "Training loss"),
              (axes[1], "validation", main_metric, f"Validation {main_metric}"))
    for ax, split, key, name in panels:
        for i, (model, runs) in enumerate(runs_by_model.items()):
            curves = [c for c in (_curve(r, split, key) for r in runs if r.get("run_dir")) if c is not None]
            if not curves:
                continue
            # Seeds may log at different steps: interpolate each inside its own range before aggregating.
            table = pd.concat(curves, axis=1).sort_index().interpolate(limit_area="inside")
            mean = table.mean(axis=1)
            # markers where points are few: a run that evaluates once is a single point, invisible as a line
            ax.plot(table.index, mean, color=f"C{i}", marker="o" if mean.notna().sum() <= MARKED_POINTS else None,
                    markersize=4, label=f"{_plain(model)} (seeds: {len(curves)})")
            if len(curves) > 1:
                ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=f"C{i}", alpha=0.2)
            drawn = True
        ax.set_title(_plain(name))
        ax.set_xlabel("step")
        ax.set_ylabel(_plain(name.lower() if split == "train" else key))
        if ax.lines:
            ax.legend(fontsize="small")
    if not drawn:
        return None
    fig.suptitle(f"{_plain(title)}: learning curves (shaded: min-max over seeds)")
    return _save(fig, path)


Stats = dict[str, dict[str, tuple[float, float]]]  # model -> category -> (mean, std over seeds)


def _grouped_bars(stats: Stats, categories: list[str], xlabel: str, ylabel: str, title: str, path: Path,
                  ylim: tuple[float, float] | None = None) -> Path:
    """Bars grouped by category, one colour per model, std over seeds as error bars (none for one seed)."""
    models = list(stats)
    fig = Figure(figsize=(max(4.5, 1.2 * len(categories) * max(1, len(models)) ** 0.5 + 2), 4),
                 layout="constrained")
    ax = fig.subplots()
    width = min(0.8 / len(models), 0.3)
    x = np.arange(len(categories))
    for i, model in enumerate(models):
        means = [stats[model].get(c, (np.nan, np.nan))[0] for c in categories]
        stds = [stats[model].get(c, (np.nan, np.nan))[1] for c in categories]
        spread = any(np.isfinite(stds))  # one seed has no std: no error bar, and no cap drawn on a zero bar
        ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=np.nan_to_num(stds) if spread else None,
               capsize=3 if spread else 0, label=_plain(model), color=f"C{i}")
    ax.set_xticks(x, [_plain(c) for c in categories])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(_plain(title))
    ax.legend(fontsize="small")
    return _save(fig, path)


def metric_bars(stats: Stats, metrics: list[str], title: str, path: Path) -> Path | None:
    """Grouped bars of test metrics per model with the standard deviation over seeds as error bars."""
    metrics = [m for m in metrics if any(m in per_model for per_model in stats.values())]
    if not stats or not metrics:
        return None
    return _grouped_bars(stats, metrics, "test metric", "value (mean over seeds, error bar: std)",
                         f"{title}: test metrics", path)


def confusion_counts(runs: list[Run]) -> tuple[list[list[float]], list[str]] | None:
    """Confusion counts summed over seeds, from test_details or else recomputed from predictions."""
    total, labels = None, None
    for run in runs:
        details = run.get("test_details") or {}
        matrix, names = details.get("confusion_matrix"), details.get("labels") or run.get("labels")
        if matrix is None:
            preds = predictions(run)
            names = names or sorted({str(p.get(k)) for p in preds for k in ("label", "prediction")})
            index = {name: i for i, name in enumerate(names)}
            matrix = np.zeros((len(names), len(names)))
            for p in preds:
                if p.get("label") in index and p.get("prediction") in index:
                    matrix[index[p["label"]], index[p["prediction"]]] += 1
        matrix = np.asarray(matrix, dtype=float)
        if total is None:
            total, labels = matrix, list(names or [])
        elif matrix.shape == total.shape:
            total = total + matrix
    return (total.tolist(), [str(x) for x in labels]) if total is not None and total.size else None


def per_type_f1_stats(runs_by_model: Mapping[str, list[Run]]) -> Stats:
    """model -> entity type -> (mean, std) of F1 over seeds, from test_details.per_type or f1_<TYPE> metrics."""
    out = {}
    for model, runs in runs_by_model.items():
        values: dict[str, list[float]] = {}
        for run in runs:
            per_type = (run.get("test_details") or {}).get("per_type") or {}
            scores = {t: v.get("f1") for t, v in per_type.items() if isinstance(v, Mapping)} or {
                k[3:]: v for k, v in (run.get("test") or {}).items() if k.startswith("f1_")}
            for entity_type, f1 in scores.items():
                if isinstance(f1, (int, float)):
                    values.setdefault(entity_type, []).append(float(f1))
        out[model] = {t: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan)
                      for t, v in values.items()}
    return out


def confusion_matrix(matrix: list[list[float]], labels: list[str], title: str, path: Path) -> Path | None:
    """A confusion matrix shaded by row-normalised rate (per-class recall) and annotated with counts:
    the rate makes rare classes readable, the count says how much evidence is behind it."""
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.size == 0 or counts.shape[0] != counts.shape[1]:
        return None
    labels = list(labels) if len(labels) == counts.shape[0] else [str(i) for i in range(counts.shape[0])]
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    fig = Figure(figsize=(min(2.8 + 0.55 * n, 14), min(2.4 + 0.5 * n, 13)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of gold class")
    ax.set_xticks(range(n), [_plain(label) for label in labels], rotation=45, ha="right")
    ax.set_yticks(range(n), [_plain(label) for label in labels])
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{counts[i, j]:g}", ha="center", va="center", fontsize="small",
                        color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("gold label")
    ax.set_title(_plain(title))
    return _save(fig, path)


def per_type_f1(stats: Stats, title: str, path: Path) -> Path | None:
    """F1 per entity type (grouped bars, one colour per model; error bars: std over seeds)."""
    types = sorted({t for per_model in stats.values() for t in per_model})
    if not types:
        return None
    return _grouped_bars(stats, types, "entity type", "F1 (mean over seeds)", f"{title}: F1 per entity type", path,
                         ylim=(0, 1.05))


def length_edges(lengths: list[int]) -> tuple[int, ...]:
    """LENGTH_EDGES, cut so that the open-ended top bucket holds at least MIN_BUCKET of these sentences."""
    edges = list(LENGTH_EDGES)
    while len(edges) > 1 and sum(n > edges[-1] for n in lengths) < MIN_BUCKET:
        edges.pop()
    return tuple(edges)


def length_bucket(n_tokens: int, edges: tuple[int, ...] = LENGTH_EDGES) -> str:
    """The bucket label of a source sentence of ``n_tokens`` whitespace tokens ("1-10", ..., "51+")."""
    low = 0
    for edge in edges:
        if n_tokens <= edge:
            return f"{low + 1}-{edge}"
        low = edge
    return f"{low + 1}+"


def bleu_by_length(runs_by_model: dict[str, list[Run]]) -> tuple[dict[str, dict[str, list[float]]], dict[str, int]]:
    """Corpus BLEU (sacrebleu, detokenized text) per source-length bucket: model -> bucket -> [BLEU per seed],
    and the number of test sentences per bucket (in bucket order).

    BLEU is a corpus statistic, so it is recomputed on each bucket's sentences rather than averaging
    sentence scores.
    """
    import sacrebleu

    def n_words(p: dict) -> int:
        return len(str(p.get("source", "")).split())

    first = [n_words(p) for p in predictions(next(iter(runs_by_model.values()))[0]) if "hypothesis" in p]
    edges = length_edges(first)
    order = [length_bucket(e, edges) for e in edges] + [length_bucket(edges[-1] + 1, edges)]
    tally = Counter(length_bucket(k, edges) for k in first)
    counts = {b: tally[b] for b in order if tally[b]}
    table: dict[str, dict[str, list[float]]] = {}
    for model, runs in runs_by_model.items():
        for run in runs:
            buckets: dict[str, tuple[list[str], list[str]]] = {}
            for p in predictions(run):
                if "hypothesis" in p and "reference" in p:
                    hyps, refs = buckets.setdefault(length_bucket(n_words(p), edges), ([], []))
                    hyps.append(str(p["hypothesis"]))
                    refs.append(str(p["reference"]))
            for bucket in sorted(buckets, key=order.index):
                hyps, refs = buckets[bucket]
                score = sacrebleu.corpus_bleu(hyps, [refs]).score
                table.setdefault(model, {}).setdefault(bucket, []).append(score)
    return table, counts


def bleu_by_length_figure(table: dict[str, dict[str, list[float]]], counts: dict[str, int], title: str,
                          path: Path) -> Path | None:
    """BLEU against source-length bucket, a line per model (mean over seeds, error bars: min-max); ``counts``
    gives the buckets in order."""
    buckets = [b for b in counts if any(b in per_model for per_model in table.values())]
    if not buckets:
        return None
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(buckets))
    for i, (model, per_bucket) in enumerate(table.items()):
        values = [np.asarray(per_bucket.get(b, [np.nan])) for b in buckets]
        mean = np.array([v.mean() for v in values])
        err = np.array([[v.mean() - v.min() for v in values], [v.max() - v.mean() for v in values]])
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, color=f"C{i}", label=_plain(model))
    ax.set_xticks(x, [f"{b}\n(n={counts.get(b, 0)})" for b in buckets])
    ax.set_xlabel("source sentence length (tokens)")
    ax.set_ylabel("BLEU")
    ax.set_title(f"{_plain(title)}: BLEU by source length")
    ax.legend(fontsize="small")
    return _save(fig, path)


def attention_heatmap(attention: list[list[float]], source_tokens: list[str], target_tokens: list[str],
                      title: str, path: Path) -> Path | None:
    """An alignment heatmap in the style of Bahdanau et al. (2015), Fig. 3: source tokens across the
    top, generated tokens down the side, white = high attention weight."""
    weights = np.asarray(attention, dtype=float)
    if weights.ndim != 2 or weights.size == 0:
        return None
    # Trust the matrix over the token lists if they disagree (e.g. EOS kept in one but not the other).
    rows, cols = weights.shape
    target = [*target_tokens[:rows], *[""] * (rows - len(target_tokens))]
    source = [*source_tokens[:cols], *[""] * (cols - len(source_tokens))]
    fig = Figure(figsize=(min(max(3.5, 2.0 + 0.38 * cols), 16), min(1.6 + 0.38 * rows, 16)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(weights, cmap="gray", vmin=0, vmax=max(1.0, float(np.nanmax(weights))), aspect="equal")
    fig.colorbar(image, ax=ax, label="attention weight", shrink=0.8)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xticks(range(cols), [_plain(t) for t in source], rotation=90)
    ax.set_yticks(range(rows), [_plain(t) for t in target])
    ax.set_xlabel("source tokens")
    ax.set_ylabel("target tokens")
    ax.set_title(_plain(title), pad=12)
    return _save(fig, path)


def attention_heatmaps(runs_by_model: dict[str, list[Run]], fig_dir: Path, prefix: str,
                       limit: int = 3) -> list[tuple[str, Path]]:
    """Heatmaps for the first ``limit`` test sentences that carry attention, per model (its first seed)."""
    figures = []
    for model, runs in runs_by_model.items():
        run = runs[0]
        with_attention = [p for p in predictions(run) if p.get("attention")][:limit]
        for p in with_attention:
            index = p.get("index", "?")
            caption = f"{model} (seed {run.get('seed')}): attention for test sentence {index}"
            path = attention_heatmap(p["attention"], [str(t) for t in p.get("source_tokens", [])],
                                     [str(t) for t in p.get("target_tokens", [])], f"{model}: sentence {index}",
                                     fig_dir / f"{prefix}_attention_{slug(model)}_{index}.png")
            if path:
                figures.append((caption, path))
    return figures
