"""The lifecycle hooks (nlpkit.hookspecs: on_run_start, on_log, on_evaluate, on_checkpoint, on_results, on_run_end)
seen by a third-party plugin installed through an entry point, as tracking, sweeps and launchers will use them: it
logs every evaluation, stops the run after the second one (RunContext.stop), adds a key to the results; and under
``--jobs 2`` each run's hooks fire once."""

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.testing import install_package, one_module_plugin, plugins_on_path

# The plugin, exactly as a third party would write it: no change to nlpkit needed.
TRACKER = '''\
import os

import nlpkit


def _write(line):
    with open(os.environ["TRACKER_LOG"], "a", encoding="utf-8") as f:
        f.write(line + "\\n")


@nlpkit.hookimpl
def on_run_start(run):
    _write(f"start {run.name} {run.task_kind} {run.model} seed={run.seed} main={run.is_main_process} pid={os.getpid()}")


@nlpkit.hookimpl
def on_log(run, step, metrics):
    run.extra["logs"] = run.extra.get("logs", 0) + 1


@nlpkit.hookimpl
def on_evaluate(run, step, metrics):
    _write(f"eval {run.name} step={step} {run.main_metric}={metrics[run.main_metric]:.4f}")
    run.extra["evals"] = run.extra.get("evals", 0) + 1
    stop_after = int(os.environ.get("TRACKER_STOP_AFTER", "0"))
    if stop_after and run.extra["evals"] >= stop_after:
        run.stop(f"tracker: {stop_after} evaluations are enough")


@nlpkit.hookimpl
def on_results(run, results):
    results["tracker"] = {"evaluations": run.extra.get("evals", 0), "logs": run.extra.get("logs", 0)}


@nlpkit.hookimpl
def on_run_end(run, status, error):
    _write(f"end {run.name} {status} error={error!r}")
'''

RECIPE = """\
name: hooks
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 64, eval_size: 16}}}}
models:
  lstm: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8}}
train: {{max_steps: {steps}, batch_size: 16, eval_every: 1, log_every: 1, progress: false, precision: fp32}}
seeds: {seeds}
"""


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    """The plugin 'tracker' installed where nlpkit (and each run's own process) finds it; yields its log file."""
    package = one_module_plugin(tmp_path / "src" / "nlpkit_tracker", "nlpkit_tracker", TRACKER)
    install_package(package, tmp_path / "site")
    log = tmp_path / "tracker.log"
    monkeypatch.setenv("TRACKER_LOG", str(log))
    with plugins_on_path(tmp_path / "site"):
        yield log


def test_a_plugin_logs_every_evaluation_and_stops_the_run_after_the_second(tracker, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKER_STOP_AFTER", "2")
    recipe = tmp_path / "hooks.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path, steps=6, seeds="[1]"))
    result = CliRunner().invoke(main, ["run", str(recipe), "--no-report"])
    assert result.exit_code == 0, result.output
    lines = tracker.read_text().splitlines()
    assert [line.split(" accuracy=")[0] for line in lines[1:3]] == [
        "eval classification-lstm-seed1 step=1", "eval classification-lstm-seed1 step=2"]
    assert lines[0].startswith("start classification-lstm-seed1 classification lstm seed=1 main=True")
    assert lines[3:] == ["end classification-lstm-seed1 finished error=None"]
    assert len(lines) == 4

    folder = tmp_path / "runs" / "hooks" / "classification-lstm-seed1"
    results = json.loads((folder / "results.json").read_text())
    assert results["stopped_early"] == "tracker: 2 evaluations are enough"
    assert results["steps"] == 2  # of max_steps 6: training ended after the 2nd evaluation
    assert results["tracker"] == {"evaluations": 2, "logs": 2}  # on_results added a key before results.json
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if row["split"] == "validation"] == [1, 2]
    assert not (tmp_path / "reports" / "hooks").exists(), "--no-report writes no report"


def test_hooks_fire_once_per_run_under_jobs(tracker, tmp_path):
    recipe = tmp_path / "hooks.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path, steps=2, seeds="[1, 2]"))
    result = CliRunner().invoke(main, ["run", str(recipe), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "2 at a time" in result.output
    lines = tracker.read_text().splitlines()
    kinds = Counter((line.split()[0], line.split()[1]) for line in lines)
    for name in ("classification-lstm-seed1", "classification-lstm-seed2"):
        assert kinds[("start", name)] == 1 and kinds[("end", name)] == 1 and kinds[("eval", name)] == 2, lines
        assert f"end {name} finished error=None" in lines
    pids = {line.split("pid=")[1] for line in lines if line.startswith("start")}
    assert len(pids) == 2  # each run in a process of its own, its hooks there
    assert (tmp_path / "reports" / "hooks" / "summary.md").exists()  # the CLI wrote the report after the runs
