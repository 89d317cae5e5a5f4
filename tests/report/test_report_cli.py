"""``nlpkit report`` through the CLI: files written, installed plugins wired in, input errors as clean messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner
from test_report import classification_predictions, make_run

import nlpkit
from nlpkit import plugins
from nlpkit.cli import main


def _runs(root: Path) -> Path:
    for model, n in (("bert", 90), ("lstm", 60)):
        for seed in (1, 2):
            make_run(root, model=model, seed=seed, test={"accuracy": n / 100 + seed / 100},
                     predictions=classification_predictions(n))
    return root / "agnews"


class SectionPlugin:
    """A plugin that adds one report section, registered on the live plugin manager."""

    @nlpkit.hookimpl
    def report_sections(self, task: str, runs: list[dict[str, Any]], out_dir: str) -> list[dict[str, Any]]:
        return [{"title": f"Extra for {task}", "markdown": f"{len(runs)} runs seen by the plugin", "figures": []}]


def test_report_writes_csv_md_html_with_plugins(tmp_path: Path) -> None:
    runs = _runs(tmp_path / "runs")
    plugins.plugin_manager().register(SectionPlugin(), name="test-section")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["report", str(runs), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    assert {p.name for p in out.iterdir()} >= {"results.csv", "report.md", "report.html", "figures"}
    md = (out / "report.md").read_text()
    assert "| bert | 1 2 | **0.9150 ± 0.0071** |" in md
    assert "bert > lstm, p < 0.001" in md
    assert "### Extra for classification" in md and "4 runs seen by the plugin" in md  # the pluggy hook
    assert "Installed plugins" in md and "classification (classification)" in md  # the registry's matrix
    assert "| lstm | ✓ |" in md and "| bert | ✓ |" in md
    assert "Extra for classification" in (out / "report.html").read_text()


def test_report_one_format_and_default_out(tmp_path: Path, monkeypatch: Any) -> None:
    runs = _runs(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", str(runs), "--format", "md"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "reports" / "overview"
    assert (out / "report.md").exists() and (out / "results.csv").exists()
    assert not (out / "report.html").exists()


def test_report_errors_are_clean(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["report", str(empty), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "No finished runs" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()

    result = CliRunner().invoke(main, ["report", str(tmp_path / "missing"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "No such run folder" in result.output and str(tmp_path / "missing") in result.output

    result = CliRunner().invoke(main, ["report", str(empty), "--format", "pdf"])
    assert result.exit_code == 2 and "pdf" in result.output
