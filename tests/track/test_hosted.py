"""Runs of ``nlpkit run`` (each in a child process) have their trackers hosted by the ``nlpkit run`` process: every
tracker call is made there, in the run's order, and a run that dies hard has its trackers ended as failed."""

import json
import os

from click.testing import CliRunner
from training_utils import CRASHY

from nlpkit.cli import main
from nlpkit.testing import install_package, one_module_plugin, plugins_on_path

# A tracker plugin, appended to the crashy model's module (which imports os and nlpkit): one plugin, both kinds.
CALLS = '''

import json


class Calls(nlpkit.Tracker):
    """Writes down which process made each call, for which run."""

    name = "calls"

    def _note(self, method, *args):
        with open(os.environ["CALLS_FILE"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "run": self.run.name, "method": method, "args": args}) + "\\n")

    def __init__(self, run):
        super().__init__(run)
        self._note("__init__")

    def start(self, resume_step):
        self._note("start", resume_step)

    def log_scalars(self, step, scalars):
        self._note("log_scalars", step)

    def log_results(self, results):
        self._note("log_results")

    def log_artifacts(self, files):
        self._note("log_artifacts", sorted(files))

    def end(self, status):
        self._note("end", status)


@nlpkit.hookimpl
def register_trackers(register):
    register(Calls)
'''

TINY = "vocab_size: 200, embedding_dim: 8, hidden_size: 8"
RECIPE = f"""\
name: hosted
output: {{out}}/runs
task: {{{{name: classification, dataset: toy_topics, dataset_options: {{{{train_size: 64, eval_size: 16}}}}}}}}
models:
  lstm: {{{{{TINY}}}}}
  again: {{{{model: lstm, {TINY}}}}}
  killed: {{{{model: crashy, crash: sigkill, {TINY}}}}}
train: {{{{max_steps: 4, batch_size: 16, eval_every: 2, log_every: 1, progress: false, precision: fp32}}}}
track: [calls]
"""


def test_the_nlpkit_run_process_hosts_the_trackers_of_its_runs(tmp_path, monkeypatch):
    package = one_module_plugin(tmp_path / "src" / "calls_tracker", "calls_tracker", CRASHY + CALLS)
    install_package(package, tmp_path / "site")
    calls_file = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CALLS_FILE", str(calls_file))
    recipe = tmp_path / "hosted.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    with plugins_on_path(tmp_path / "site"):
        result = CliRunner().invoke(main, ["run", str(recipe), "--no-report"])
    assert result.exit_code == 2 and "classification-killed-seed1: process died with signal 9" in result.output
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    assert {call["pid"] for call in calls} == {os.getpid()}  # every call made in this (the nlpkit run) process
    by_run = {}
    for call in calls:
        by_run.setdefault(call["run"], []).append((call["method"], *call["args"]))
    for name in ("classification-lstm-seed1", "classification-again-seed1"):
        made = by_run[name]
        assert made[:2] == [("__init__",), ("start", 0)]
        assert [step for method, step in made[2:-3]] == [1, 2, 2, 3, 4, 4]  # train logs, evaluations at 2 and 4
        assert made[-3:] == [("log_results",), ("log_artifacts", ["metrics.jsonl", "model", "recipe.yaml",
                                                                  "results.json"]), ("end", "finished")]
        cost = json.loads((tmp_path / "runs" / "hosted" / name / "tracking.json").read_text())["cost"]
        assert "nlpkit run process" in cost["where"] and cost["seconds_by_call"]["calls.start"] >= 0
    killed = by_run["classification-killed-seed1"]
    assert killed[:2] == [("__init__",), ("start", 0)] and killed[-1] == ("end", "failed")  # ended for it
    assert ("log_scalars", 2) in killed and ("log_results",) not in killed
