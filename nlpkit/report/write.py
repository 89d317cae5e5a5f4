"""Comparison reports over finished run folders (``nlpkit report``) and the end-of-run summary.

A section is one data set (task, dataset plugin, its files and options) and a "model" within it is one
configuration (the entry's label and its settings hash; see ``report_runs.identify``): two data sets read by one
loader, or two configurations of one model, are never averaged together nor tested as seeds of one another.
Each section gets its tables (``report_tables``), figures (``report_figures``) and significance tests
(``report_stats``) as a list of blocks, which ``report_render`` writes as Markdown and as self-contained HTML.
Runs are read from disk (``report_runs``), so any set of old runs can be compared later.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nlpkit.errors import NlpkitError
from nlpkit.files import atomic_write_text
from nlpkit.report import figures as figs
from nlpkit.report.render import Block, markdown_table, plugin_figure, render_html, render_markdown
from nlpkit.report.runs import Run, by_model, discover_runs, identify, load_runs, normalize
from nlpkit.report.stats import ALPHA, format_p, significance
from nlpkit.report.tables import (
    COST_TABLE,
    SPEED_COLUMNS,
    Table,
    aggregate,
    compatibility_table,
    cost_table,
    display,
    metric_columns,
    metric_specs,
    metric_table,
    results_frame,
    samples_table,
    stats_table,
)

FORMATS = ("md", "html")
TITLE = "nlpkit comparison report"
ExtraSections = Callable[[str, list[Run], str], Any]

__all__ = [
    "write_report", "write_plugin_report", "summarize", "compatibility_markdown",
    "discover_runs", "load_runs", "FORMATS",
]


# ---------------------------------------------------------------- one section: one data set

def _figures(kind: str, title: str, prefix: str, frame: pd.DataFrame, runs_by_model: dict[str, list[Run]],
             fig_dir: Path) -> list[Block]:
    """Figure blocks for one task group (with the BLEU-by-length table next to its figure)."""
    main = str(frame["main_metric"].iloc[0])

    def figure(caption: str, path: Path | None) -> list[Block]:
        return [("figure", caption, path)] if path else []

    blocks = [("h", 3, "Figures"), *figure(
        "Learning curves: training loss and validation " + main,
        figs.learning_curves(runs_by_model, main, title, fig_dir / f"{prefix}_learning_curves.png"))]
    # The headline metrics only: per-type scores, losses and perplexities have figures or tables of their own.
    metrics = [m for m, *_ in metric_specs(frame) if not re.match(r"(f1|precision|recall|support)_", m)
               and "loss" not in m and "perplexity" not in m][:6]
    agg = aggregate(frame, metrics)
    stats = {row["model"]: {display(m): (row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics}
             for _, row in agg.iterrows()}
    blocks += figure("Test metrics (mean over seeds; error bars: std)", figs.metric_bars(
        stats, [display(m) for m in metrics], title, fig_dir / f"{prefix}_metrics.png"))
    if kind == "classification":
        for model, runs in runs_by_model.items():
            confusion = figs.confusion_counts(runs)
            if confusion:
                blocks += figure(f"Confusion matrix of {model} (test set, summed over {len(runs)} seed(s))",
                                 figs.confusion_matrix(*confusion, f"{title}: {model}",
                                                       fig_dir / f"{prefix}_confusion_{figs.slug(model)}.png"))
    elif kind == "tagging":
        blocks += figure("F1 per entity type (mean over seeds)", figs.per_type_f1(
            figs.per_type_f1_stats(runs_by_model), title, fig_dir / f"{prefix}_f1_per_type.png"))
    elif kind == "seq2seq":
        blocks += _bleu_by_length(title, prefix, runs_by_model, fig_dir)
        heatmaps = figs.attention_heatmaps(runs_by_model, fig_dir, prefix)
        if heatmaps:
            blocks += [("h", 3, "Attention"), ("p", "Attention weights of the first test sentences (source tokens "
                                                     "across, generated tokens down; white = high weight)."),
                       *(("figure", caption, path) for caption, path in heatmaps)]
    return blocks


def _bleu_by_length(title: str, prefix: str, runs_by_model: dict[str, list[Run]], fig_dir: Path) -> list[Block]:
    """Corpus BLEU per source-length bucket: a figure and the table of its numbers."""
    by_length, counts = figs.bleu_by_length(runs_by_model)
    if not by_length:
        return []
    buckets = [b for b in counts if any(b in v for v in by_length.values())]
    rows = [[m, *(f"{np.mean(v[b]):.2f}" if b in v else "–" for b in buckets)] for m, v in by_length.items()]
    path = figs.bleu_by_length_figure(by_length, counts, title, fig_dir / f"{prefix}_bleu_by_length.png")
    caption = "Corpus BLEU per source-length bucket (mean over seeds; error bars: min-max over seeds)"
    return [("h", 3, "BLEU by source length"), *([("figure", caption, path)] if path else []),
            ("table", Table(["model", *(f"{b} (n={counts[b]})" for b in buckets)], rows))]


def _significance_blocks(runs_by_model: dict[str, list[Run]], n_resamples: int, seed: int) -> list[Block]:
    tests = significance(runs_by_model, n_resamples, seed)
    rows = [[f"{t['model_a']} vs {t['model_b']}", t["seeds"], t.get("test", "–"), t.get("metric", "–"),
             *(f"{t[k]:.4f}" if k in t else "–" for k in ("score_a", "score_b")),
             format_p(t["p"]) if "p" in t else "–", t["verdict"]] for t in tests]
    return [("h", 3, "Significance"), ("p", (
        "Each pair of models is compared on the same test set using its first common seed (a majority vote "
        "over seeds would test an ensemble, not the runs reported above). Classification: exact McNemar "
        "test on per-example correctness; tagging and translation: paired bootstrap over test sentences "
        f"(seed {seed}). Significance level {ALPHA}, no correction for multiple comparisons.")),
        ("table", Table(["pair", "seeds", "test", "metric", "score A", "score B", "p", "verdict"], rows))]


def _plugin_blocks(extra_sections: ExtraSections, task: str, runs: list[Run], out: Path) -> list[Block]:
    """Sections a plugin adds; accepts one list of sections or pluggy's list of per-plugin lists."""
    try:
        returned = extra_sections(task=task, runs=runs, out_dir=str(out))  # keywords: pluggy's relay needs them
    except Exception as error:  # a broken plugin must not cost the rest of the report
        print(f"report section from plugin failed for {task}: {error!r}", file=sys.stderr)
        return [("p", f"A plugin's report section failed: {error!r}")]
    sections = []
    for item in returned or []:
        sections += item if isinstance(item, list) else [item] if isinstance(item, Mapping) else []
    blocks: list[Block] = []
    for section in sections:
        blocks += [("h", 3, str(section.get("title", "Plugin section"))),
                   ("markdown", str(section.get("markdown", "")))]
        blocks += [b for b in (plugin_figure(f, out) for f in section.get("figures") or []) if b]
    return blocks


def warning_blocks(runs: list[Run]) -> list[Block]:
    """The runs' own warnings (results.json "warnings": e.g. still improving when training stopped), each with
    the model and seed it belongs to, for the section that shows those runs' numbers."""
    items = [f"{run['model']}, seed {run.get('seed')}: {w}" for run in by_model_runs(runs)
             for w in run.get("warnings") or [] if isinstance(w, str)]
    return [("h", 3, "Warnings"), ("list", items)] if items else []


def by_model_runs(runs: list[Run]) -> list[Run]:
    return [run for group in by_model(runs).values() for run in group]


def _task_blocks(frame: pd.DataFrame, runs: list[Run], out: Path, n_resamples: int, seed: int,
                 extra_sections: ExtraSections | None, prefix: str) -> list[Block]:
    first = runs[0]
    task, kind, main = first["task"], first["task_kind"], str(first["main_metric"])
    gib = bool(first["greater_is_better"])
    runs_by_model = by_model(runs)
    title = first["section_title"]
    blocks: list[Block] = [
        ("h", 2, title),
        ("p", f"Task kind {kind}; main metric {main} ({'higher' if gib else 'lower'} is better); "
              f"{len(runs)} runs of {len(runs_by_model)} model(s). Test-set values are mean ± sample std over seeds; "
              "the best value per column is in bold."),
        ("h", 3, "Test metrics"), ("table", metric_table(frame)),
        *warning_blocks(runs),
        ("h", 3, "Cost"), ("table", cost_table(frame)),
    ]
    blocks += _figures(kind, title, prefix, frame, runs_by_model, out / "figures")
    if len(runs_by_model) > 1:
        blocks += _significance_blocks(runs_by_model, n_resamples, seed)
    samples = samples_table(kind, runs_by_model)
    if samples:
        blocks += [("h", 3, "Sample predictions (first seed)"), ("table", samples)]
    if extra_sections is not None:
        blocks += _plugin_blocks(extra_sections, task, runs, out)
    return blocks


# ---------------------------------------------------------------- entry points

def _groups(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs per report section (one data set), sections in title order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run["section"], []).append(run)
    return dict(sorted(groups.items(), key=lambda item: (item[1][0]["section_title"], item[0])))


def write_report(run_dirs: Sequence[str | Path], out: str | Path, formats: Sequence[str] = FORMATS,
                 compat: Any = None, extra_sections: ExtraSections | None = None, *, n_resamples: int = 1000,
                 seed: int = 0) -> Path:
    """Compare finished runs: write ``results.csv`` (always), ``report.md`` / ``report.html`` and ``figures/``.

    ``run_dirs``: run folders or folders above them. ``compat``: None (no section), or the installed plugins as
    ``(models, tasks)`` or ``{"models": ..., "tasks": ...}`` with models {name: [task kinds served]} and tasks
    {name: kind}. ``extra_sections(task=, runs=, out_dir=)``: e.g. the ``report_sections`` hook relay; may return
    a list of sections or pluggy's list of lists. Returns the HTML report if written, else the Markdown one,
    else the CSV. Raises NlpkitError for an unknown format, a missing folder or no finished runs.
    """
    out = Path(out)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise NlpkitError(f"Unknown report format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    runs, skipped = load_runs(run_dirs)
    if not runs:
        raise NlpkitError(f"No finished runs (folders with results.json) under {', '.join(map(str, run_dirs))}")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    frame = results_frame(runs)
    atomic_write_text(out / "results.csv", frame.to_csv(index=False))

    groups = _groups(runs)
    overview = Table(["data set", "kind", "models", "runs"], [
        [rs[0]["section_title"], rs[0]["task_kind"], ", ".join(sorted({r["model"] for r in rs})), str(len(rs))]
        for rs in groups.values()])
    blocks: list[Block] = [("h", 1, TITLE),
                           ("p", f"{len(runs)} finished runs; {len(skipped)} unfinished run(s) skipped. "
                                 "Per-run numbers are in results.csv."),
                           ("table", overview)]
    pairs = [(rs[0]["task"], rs[0]["dataset"]) for rs in groups.values()]
    for i, (section, group_runs) in enumerate(groups.items()):
        group = frame[frame["section"] == section].reset_index(drop=True)
        pair = pairs[i]  # figure files are named by task and dataset, numbered where two data sets share both
        prefix = figs.slug(*pair, *([str(i + 1)] if pairs.count(pair) > 1 else []))
        blocks += _task_blocks(group, group_runs, out, n_resamples, seed, extra_sections, prefix)
    if compat is not None:
        models, tasks = (compat["models"], compat["tasks"]) if isinstance(compat, Mapping) else compat
        blocks += [("h", 2, "Installed plugins: which model serves which task"),
                   ("table", compatibility_table(models, tasks))]
    if skipped:
        blocks += [("h", 2, "Skipped runs"), ("list", [str(p) for p in skipped])]

    written = out / "results.csv"
    if "md" in formats:
        written = out / "report.md"
        atomic_write_text(written, render_markdown(blocks, out))
    if "html" in formats:
        written = out / "report.html"
        atomic_write_text(written, render_html(blocks, TITLE))
    return written


def write_plugin_report(run_dirs: Sequence[str | Path], out: str | Path, formats: Sequence[str] = FORMATS) -> Path:
    """:func:`write_report` with what the installed plugins add: the model x task matrix and each plugin's
    ``report_sections``. Used by ``nlpkit report`` and at the end of ``nlpkit run``."""
    from nlpkit.plugins import plugin_manager, registry

    reg = registry()
    compat = ({name: list(cls.serves) for name, cls in reg.models.items()},
              {name: cls.kind for name, cls in reg.tasks.items()})
    return write_report(run_dirs, out, formats, compat, plugin_manager().hook.report_sections)


def summarize(run_dirs_or_results: Any, out_dir: str | Path) -> Path:
    """End-of-``nlpkit run`` summary: ``summary.csv`` and ``summary.md`` in ``out_dir``; returns summary.md.

    Takes run folders (or folders above them), results dicts (``results.json`` contents), or a mix: one row
    per configuration and data set with mean ± std over seeds of each scalar test metric and of training speed.
    Raises NlpkitError when there is no finished run.
    """
    items = run_dirs_or_results if isinstance(run_dirs_or_results, (list, tuple)) else [run_dirs_or_results]
    runs = [normalize(dict(i)) for i in items if isinstance(i, Mapping)]
    folders = [i for i in items if not isinstance(i, Mapping) and Path(i).is_dir()]
    if folders:
        runs += load_runs(folders)[0]
    runs = identify(runs)
    if not runs:
        raise NlpkitError(f"No finished runs to summarize in {', '.join(map(str, items)) or '(nothing)'}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = results_frame(runs)
    speed = [c for c in SPEED_COLUMNS if frame[c].notna().any()]
    atomic_write_text(out / "summary.csv", aggregate(frame, metric_columns(frame) + speed).to_csv(index=False))
    devices = ", ".join(sorted({f"{d} [{p}]" for d, p in zip(frame["device"], frame["precision"]) if d}))
    blocks: list[Block] = [("h", 1, "Summary"), ("p", (
        "Test metrics and training speed: mean ± sample std over seeds (a single seed has no std); best per "
        f"column in bold. Measured on: {devices or 'unknown device'}."))]
    for section, group_runs in _groups(runs).items():
        group = frame[frame["section"] == section].reset_index(drop=True)
        speeds = [(c, h, s, not g) for c, h, s, g in COST_TABLE if c in speed and group[c].notna().any()]
        blocks += [("h", 2, group_runs[0]["section_title"]),
                   ("table", stats_table(group, metric_specs(group) + speeds)), *warning_blocks(group_runs)]
    atomic_write_text(out / "summary.md", render_markdown(blocks, out))
    return out / "summary.md"


def compatibility_markdown(models: Mapping[str, Sequence[str]], tasks: Mapping[str, str]) -> str:
    """:func:`~nlpkit.report.tables.compatibility_table` as Markdown, e.g. for ``nlpkit plugins``."""
    return markdown_table(compatibility_table(models, tasks))
