"""Reports read right: single points visible, no caps without a spread, "best" only where it means something,
budgets beside train times, device grammar, plugin figure captions, AG News text without HTML leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from nlpkit.report import figures as report_figures
from nlpkit.report import tables as report_tables
from nlpkit.report.render import plugin_figure, render_markdown


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figures the report functions would save."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(report_figures, "_save", keep)
    return figures


def test_single_evaluation_curve_has_markers(tmp_path, captured):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [{"step": s, "split": "train", "loss": 1.0 / s} for s in range(1, 40)]
    rows += [{"step": 39, "split": "validation", "bleu": 17.8}]  # one evaluation, at the end
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report_figures.learning_curves({"bert": [{"run_dir": str(run_dir)}]}, "bleu", "t", tmp_path / "c.png")
    loss_ax, val_ax = captured[0].axes[:2]
    assert [line.get_marker() for line in val_ax.get_lines()] == ["o"]  # one point: visible
    assert [line.get_marker() for line in loss_ax.get_lines()] == ["None"]  # 39 points: a plain line


def test_single_seed_bars_have_no_error_bars(tmp_path, captured):
    stats = {"a": {"f1": (0.8, float("nan"))}, "b": {"f1": (0.7, 0.02)}}
    report_figures.metric_bars(stats, ["f1"], "t", tmp_path / "m.png")
    from matplotlib.container import BarContainer

    one, two = [c for c in captured[0].axes[0].containers if isinstance(c, BarContainer)]
    assert one.errorbar is None and two.errorbar is not None


def _frame(steps_b: int) -> pd.DataFrame:
    """The frame a report builds from run dicts: two models, two seeds each, on one data set."""
    runs = []
    for model, seconds, params, steps in (("a", 100.0, 2e6, 500), ("b", 50.0, 1e6, steps_b)):
        for seed in (1, 2):
            runs.append({"task": "t", "dataset": "d", "section": "t-d", "section_title": "t — d", "model": model,
                         "seed": seed, "train_seconds": seconds, "train_examples_per_s": 10.0 * seconds,
                         "train_tokens_per_s": None, "peak_memory_mb": 9.0, "parameters": params,
                         "device": "cpu (1 threads)", "precision": "fp32", "steps": steps, "epochs": steps / 100,
                         "test": {"accuracy": 0.5}})
    return report_tables.results_frame(runs)


def test_cost_table_marks_no_parameter_count_and_shows_budgets():
    table = report_tables.cost_table(_frame(steps_b=500))
    header = table.header
    assert header[header.index("train time (s)") + 1] == "budget"
    assert table.rows[0][header.index("budget")] == "500 steps (5 epochs)"
    params = header.index("parameters (M)")
    assert not any(j == params for _, j in table.best)  # fewer parameters is not "best" (nor more)
    assert (1, header.index("train time (s)")) in table.best  # same budget: the faster one is marked
    assert (0, header.index("examples/s")) in table.best
    assert table.rows[0][header.index("device")] == "cpu (1 thread)"


def test_train_time_is_not_ranked_across_different_budgets():
    table = report_tables.cost_table(_frame(steps_b=250))
    assert table.rows[1][table.header.index("budget")] == "250 steps (2.5 epochs)"
    assert not any(j == table.header.index("train time (s)") for _, j in table.best)


def test_device_text_says_one_thread():
    from nlpkit.train.hardware import device_description

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert "(1 thread" in device_description(torch.device("cpu"))
        assert "1 threads" not in device_description(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)


def test_plugin_figure_paths_and_captions(tmp_path):
    out = tmp_path / "report"
    (out / "mine").mkdir(parents=True)
    png = out / "mine" / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    relative = plugin_figure({"path": "mine/f.png", "caption": "Kappa per seed"}, out)
    absolute = plugin_figure(str(png), out)
    assert relative == ("figure", "Kappa per seed", out / "mine" / "f.png")
    assert absolute == ("figure", "f.png", png)
    assert plugin_figure("missing.png", out) is None
    assert "![Kappa per seed](<mine/f.png>)" in render_markdown([relative], out)


def test_ag_news_text_has_no_html_leftovers(tmp_path):
    from nlpkit_plugins.datasets.ag_news import read_agnews_csv

    path = tmp_path / "test.csv"
    path.write_text('"2","They\'ve caught his eye","In  quot;helping themselves, quot; Ricky #39;s AT&amp;T '
                    '&lt;b&gt;"\n"4","Worms","\\""Sven is\\responsible for 70 percent.""\\"" Sony #146;s"\n')
    texts = [r["text"] for r in read_agnews_csv(Path(path))]
    assert texts[0] == 'They\'ve caught his eye In "helping themselves," Ricky\'s AT&T <b>'
    assert texts[1] == 'Worms "Sven is responsible for 70 percent."" Sony\u2019s'
