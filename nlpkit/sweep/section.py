"""The report's sweep section (a ``report_sections`` hook, registered by the sweep in ``nlpkit run``): per study
of the section's task, the trials table (settings, value, state, time), the optimisation history, Optuna's
parameter importances, and the best settings' test scores over their seeds beside the recipe's own settings'.

It reads the study summaries the driver writes (``<output>/<recipe>/sweep/<task>-<entry>.json``) beside the runs
the report shows, so it needs neither Optuna nor the study's storage.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import nlpkit
from nlpkit.report.figures import slug
from nlpkit.report.render import markdown_table
from nlpkit.report.tables import Table

PLUGIN_NAME = "nlpkit-sweep-section"


def register() -> None:
    """Add this section to the reports this process writes (``nlpkit run`` with a sweep, ``nlpkit report``)."""
    import sys

    from nlpkit.plugins import plugin_manager

    if plugin_manager().get_plugin(PLUGIN_NAME) is None:
        plugin_manager().register(sys.modules[__name__], name=PLUGIN_NAME)


def summaries(runs: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The sweep summaries of ``task`` in the recipe folders the runs live in."""
    found: dict[Path, dict[str, Any]] = {}
    for folder in dict.fromkeys(Path(r["run_dir"]).parent for r in runs if r.get("run_dir")):
        for path in sorted((folder / "sweep").glob("*.json")):
            try:
                summary = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(summary, dict) and summary.get("task") == task:
                found[path.resolve()] = summary
    return list(found.values())


@nlpkit.hookimpl
def report_sections(task: str, runs: list[dict[str, Any]], out_dir: str) -> list[dict[str, Any]]:
    return [section(summary, runs, Path(out_dir)) for summary in summaries(runs, task)]


def section(summary: dict[str, Any], runs: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    entry, metric = summary["entry"], summary["metric"]
    trials = summary["trials"]
    states = [t["state"] for t in trials if not t.get("interrupted")]
    count = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running") if s in states)
    best = summary.get("best")
    lines = [f"Study `{summary['study']}`: {len(states)} of {summary['trials_wanted']} trials ({count}); "
             f"{summary['sampler']} sampler, {summary['pruner']} pruner; objective {summary['direction']} "
             f"validation {metric} (trials never read the test split)."]
    if best:
        settings = ", ".join(f"{k} = {_value(v)}" for k, v in best["params"].items())
        lines.append(f"Best: trial {best['number']}, validation {metric} {best['value']:.4f}, with {settings}.")
    lines += ["", markdown_table(_best_beside_own(summary, runs)), "", "Trials:", "",
              markdown_table(_trials_table(summary))]
    if summary.get("importance_missing"):
        lines.append(f"\nParameter importance: not computed ({summary['importance_missing']}).")
    name = slug("sweep", summary["task"], entry)
    figures = [f for f in (_history(summary, out / "figures" / f"{name}_history.png"),
                           _importance(summary, out / "figures" / f"{name}_importance.png")) if f]
    return {"title": f"Sweep: {summary['task']} x {entry}", "markdown": "\n".join(lines), "figures": figures}


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _best_beside_own(summary: dict[str, Any], runs: list[dict[str, Any]]) -> Table:
    """Test mean ± std over seeds of the recipe's own settings (entry) and the best ones (<entry>-best)."""
    rows = []
    for label, what in ((summary["entry"], "the recipe's settings"), (f"{summary['entry']}-best", "best settings")):
        group = [r for r in runs if r.get("model") == label]
        if not group:
            rows.append([label, what, "0", "not run"])
            continue
        main = str(group[0]["main_metric"])
        scores = [r["test"][main] for r in group if isinstance((r.get("test") or {}).get(main), (int, float))]
        spread = f" ± {statistics.stdev(scores):.4f}" if len(scores) > 1 else ""
        rows.append([label, what, ", ".join(str(r.get("seed")) for r in group),
                     f"test {main} {statistics.mean(scores):.4f}{spread}" if scores else "no test scores"])
    return Table(["model entry", "settings", "seeds", "test (mean ± std over seeds)"], rows)


def _trials_table(summary: dict[str, Any]) -> Table:
    params = list(summary["parameters"])
    rows = []
    for t in summary["trials"]:
        if t.get("interrupted"):
            state = "interrupted (ran again)"
        else:
            state = t["state"] + (f": {t['error']}" if t.get("error") else "")
        rows.append([str(t["number"]), *[_value(t["params"].get(p, "")) for p in params],
                     "" if t["value"] is None else f"{t['value']:.4f}", state,
                     "" if t["seconds"] is None else f"{t['seconds']:.0f}",
                     Path(t["folder"]).name if t.get("folder") else ""])
    return Table(["trial", *params, f"validation {summary['metric']}", "state", "time (s)", "folder"], rows)


def _history(summary: dict[str, Any], path: Path) -> dict[str, str] | None:
    """Each completed trial's value by trial number, pruned trials at their last reported value, and the best so
    far."""
    done = [t for t in summary["trials"] if t["state"] == "complete"]
    if not done:
        return None
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    ax.scatter([t["number"] for t in done], [t["value"] for t in done], label="completed", zorder=3)
    pruned = [(t["number"], list(t["intermediate"].values())[-1]) for t in summary["trials"]
              if t["state"] == "pruned" and t.get("intermediate")]
    if pruned:
        ax.scatter(*zip(*pruned), marker="x", color="grey", label="pruned (last reported)", zorder=3)
    pick = max if summary["direction"] == "maximize" else min
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t["number"]):
        best = t["value"] if best is None else pick(best, t["value"])
        xs.append(t["number"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {summary['metric']}")
    ax.set_title(f"Optimisation history: {summary['study']}")
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return {"path": str(path), "caption": f"Optimisation history of {summary['study']}"}


def _importance(summary: dict[str, Any], path: Path) -> dict[str, str] | None:
    """Optuna's parameter importances (its default evaluator, over the completed trials), as bars."""
    importance = summary.get("importance")
    if not importance:
        return None
    names = sorted(importance, key=importance.get)
    fig = Figure(figsize=(7.2, 1.2 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("importance (optuna.importance; sums to 1)")
    ax.set_title(f"Parameter importance ({summary['entry']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return {"path": str(path), "caption": f"Parameter importance in {summary['study']} (Optuna)"}
