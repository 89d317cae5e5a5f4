"""Tiny sweeps on generated data: trials within their ranges in folders of their own, never the test split,
pruned when hopeless, side by side under --jobs 2 against one study, and a sweep killed mid-trial resumed with no
trial trained twice."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.config.recipe import load_recipe
from nlpkit.plugins import registry
from nlpkit.sweep.driver import run_sweep
from nlpkit.sweep.schema import load_sweep
from nlpkit.testing import install_package, one_module_plugin, plugins_on_path

RECIPE = """\
name: tiny
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: {dataset}, dataset_options: {{train_size: 64, eval_size: 16}}}}
models:
  lstm: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8}}
train: {{epochs: 1, batch_size: 16, eval_every: 2, log_every: 1, checkpoint_every: 2, progress: false,
        precision: fp32}}
seeds: [1]
sweep:
  metric: validation.accuracy
  sampler: random
  seed: 3
  best_seeds: [1]
{sweep}"""

RANGES = """\
  trials: 3
  parameters:
    models.lstm.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
    models.lstm.hidden_size: {type: int, low: 4, high: 12, step: 4}
    models.lstm.dropout: {type: categorical, choices: [0.0, 0.3]}
"""


def write(tmp_path: Path, sweep: str, dataset: str = "toy_topics") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE.format(out=tmp_path, dataset=dataset, sweep=sweep))
    return path


def trial_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs" / "tiny" / "trials").iterdir())


def study(tmp_path: Path, name: str = "tiny.classification.lstm"):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = JournalFileBackend(str(tmp_path / "runs" / "tiny" / "sweep" / "journal.log"))
    return optuna.load_study(study_name=name, storage=JournalStorage(journal))


def test_trials_sample_within_their_ranges_into_folders_of_their_own_and_the_best_runs_beside_the_recipes(
        tmp_path, monkeypatch):
    monkeypatch.setenv("NLPKIT_IN_PROCESS", "1")
    result = CliRunner().invoke(main, ["run", str(write(tmp_path, RANGES))])
    assert result.exit_code == 0, result.output
    folders = trial_folders(tmp_path)
    assert len(folders) == 3 and all(f.name.startswith("classification-lstm-") for f in folders)
    seen = set()
    for folder in folders:
        resolved = yaml.safe_load((folder / "recipe.yaml").read_text())
        options, train = resolved["model_options"], resolved["train"]
        assert 1e-3 <= train["lr"] <= 1e-1 and options["hidden_size"] in (4, 8, 12)
        assert options["dropout"] in (0.0, 0.3)
        seen.add((train["lr"], options["hidden_size"], options["dropout"]))
        assert folder.name.endswith(resolved["settings_hash"][:8])  # named by the hash of its settings
        results = json.loads((folder / "results.json").read_text())
        assert results["test"] == {} and results["test_split"] == "skipped" and results["test_examples"] == 0
        assert not (folder / "predictions.jsonl").exists()
        trial = json.loads((folder / "trial.json").read_text())
        assert trial["study"] == "tiny.classification.lstm" and trial["metric"] == "accuracy"
    assert len(seen) == 3, "three settings, three folders"
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(t.intermediate_values for t in trials), "the pruning hook reported every evaluation"
    best = max(trials, key=lambda t: t.value)
    recipe_runs = tmp_path / "runs" / "tiny"
    best_run = yaml.safe_load((recipe_runs / "classification-lstm-best-seed1" / "recipe.yaml").read_text())
    assert best_run["train"]["lr"] == best.params["models.lstm.lr"] and best_run["label"] == "lstm-best"
    assert json.loads((recipe_runs / "classification-lstm-seed1" / "results.json").read_text())["test"]["accuracy"] >= 0
    report = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert "### Sweep: classification x lstm" in report and "3 of 3 trials (3 complete)" in report
    assert "| lstm-best | best settings | 1 | test accuracy" in report
    assert (tmp_path / "reports" / "tiny" / "figures" / "sweep_classification_lstm_history.png").is_file()
    assert (tmp_path / "reports" / "tiny" / "figures" / "sweep_classification_lstm_importance.png").is_file()

    later = CliRunner().invoke(main, ["report", str(recipe_runs), "-o", str(tmp_path / "later"), "--format", "md"])
    assert later.exit_code == 0, later.output  # `nlpkit report` over the recipe's folder: trials are not models
    assert "### Sweep: classification x lstm" in (tmp_path / "later" / "report.md").read_text()
    rows = (tmp_path / "later" / "results.csv").read_text().splitlines()
    assert "skipping" not in later.output and len(rows) == 3, rows  # the recipe's run and the best run


def test_settings_proposed_again_are_read_back_not_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPKIT_IN_PROCESS", "1")
    recipe = write(tmp_path, "  trials: 3\n  parameters:\n    models.lstm.hidden_size: {type: categorical, "
                             "choices: [4, 8]}\n")
    result = CliRunner().invoke(main, ["run", str(recipe), "--no-report"])
    assert result.exit_code == 0, result.output
    assert result.output.count(": training") - 2 == len(trial_folders(tmp_path)) <= 2  # 2 more: own + best run
    assert "not trained again" in result.output  # 3 trials over 2 settings: one is proposed twice
    assert [t.state.name for t in study(tmp_path).trials] == ["COMPLETE"] * 3


def test_the_median_pruner_stops_a_trial_whose_validation_curve_is_hopeless(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPKIT_IN_PROCESS", "1")
    sweep = ("  trials: {n}\n  pruner_startup_trials: 1\n  pruner_warmup_steps: 2\n  parameters:\n"
             "    models.lstm.lr: {{type: float, low: {low}, high: {high}}}\n")
    learns = write(tmp_path, sweep.format(n=1, low=0.05, high=0.06))  # a first trial that learns: the yardstick
    assert CliRunner().invoke(main, ["run", str(learns), "--no-report"]).exit_code == 0
    hopeless = write(tmp_path, sweep.format(n=2, low=1.0e-9, high=2.0e-9))  # the same study, one more: lr too tiny
    result = CliRunner().invoke(main, ["run", str(hopeless), "--no-report"])
    assert result.exit_code == 0, result.output

    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"], result.output
    folder = Path(trials[1].user_attrs["folder"])
    stopped = json.loads((folder / "results.json").read_text())["stopped_early"]
    assert stopped.startswith("pruned by optuna at step 2"), stopped  # its first evaluation after the warmup
    assert max(trials[1].intermediate_values) == 2 < max(trials[0].intermediate_values) == 4
    assert trials[1].intermediate_values[2] < trials[0].intermediate_values[2]


COUNTING = '''\
import os

import nlpkit
from nlpkit_plugins.datasets.toy_topics import ToyTopics


class CountedTopics(ToyTopics):
    """toy_topics, writing down every split it is asked for and by which process."""

    name = "counted_topics"

    def load(self, split):
        with open(os.environ["SPLIT_LOG"], "a", encoding="utf-8") as f:
            f.write(f"{split} {os.getpid()}\\n")
        return super().load(split)


@nlpkit.hookimpl
def register_datasets(register):
    register(CountedTopics)
'''


@pytest.fixture
def split_log(tmp_path, monkeypatch):
    """The dataset ``counted_topics`` installed where each run's process finds it; yields its log of reads."""
    package = one_module_plugin(tmp_path / "src" / "nlpkit_counted", "nlpkit_counted", COUNTING)
    install_package(package, tmp_path / "site")
    log = tmp_path / "splits.log"
    monkeypatch.setenv("SPLIT_LOG", str(log))
    with plugins_on_path(tmp_path / "site"):
        yield log


def test_jobs_2_runs_trials_side_by_side_against_one_study_and_trials_never_read_the_test_split(tmp_path, split_log):
    recipe = load_recipe(write(tmp_path, "  trials: 2\n  parameters:\n    models.lstm.lr: {type: float, "
                                         "low: 1.0e-3, high: 1.0e-1, log: true}\n", "counted_topics"))
    said = []
    best, outcomes = run_sweep(recipe, load_sweep(recipe, registry()), jobs=2, say=said.append)
    assert "Running 2 runs, 2 at a time" in "\n".join(said)
    reads = [line.split() for line in split_log.read_text().splitlines()]
    assert sorted(split for split, _ in reads) == ["train"] * 2 + ["validation"] * 2, reads  # never test
    assert len({pid for _, pid in reads}) == 2 and str(os.getpid()) not in {pid for _, pid in reads}
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert all(t.intermediate_values for t in trials), "each trial's process reported to the study"
    first, second = trials[0], trials[1]
    assert first.datetime_start < second.datetime_complete and second.datetime_start < first.datetime_complete, \
        "two trials ran at once"
    assert len(outcomes[0].trained) == 2 and [spec.name for spec in best] == ["classification-lstm-best-seed1"]
    assert best[0].test_split, "the best settings' runs are ordinary runs: they read test"


KILL_DRIVER = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from sweep_faults import die_in_nth_run_at

die_in_nth_run_at(2, int(sys.argv[1]))
from nlpkit.cli import main
main(sys.argv[2:])
"""


def test_a_sweep_killed_mid_trial_resumes_it_from_its_checkpoint_and_trains_no_trial_twice(tmp_path, monkeypatch):
    recipe = write(tmp_path, "  trials: 3\n  parameters:\n    models.lstm.lr: {type: float, low: 1.0e-3, "
                             "high: 1.0e-1, log: true}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "NLPKIT_IN_PROCESS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILL_DRIVER, "3", "run", str(recipe)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    first, second = (Path(t.user_attrs["folder"]) for t in study(tmp_path).trials)
    assert [t.state.name for t in study(tmp_path).trials] == ["COMPLETE", "RUNNING"]
    finished_at = (first / "results.json").stat().st_mtime_ns
    assert not (second / "results.json").exists() and (second / "checkpoints").is_dir()

    monkeypatch.setenv("NLPKIT_IN_PROCESS", "1")
    again = CliRunner().invoke(main, ["run", str(recipe), "--no-report"])
    assert again.exit_code == 0, again.output
    assert f"({second.name}): interrupted, its settings run again" in again.output
    assert f"{second.name}: resuming from the checkpoint at step 2" in again.output or \
        json.loads((second / "results.json").read_text())["resumed_from_step"] == 2
    assert json.loads((second / "results.json").read_text())["resumed_from_step"] == 2
    assert (first / "results.json").stat().st_mtime_ns == finished_at, "the finished trial was not trained again"
    states = [(t.state.name, bool(t.user_attrs.get("interrupted"))) for t in study(tmp_path).trials]
    assert states == [("COMPLETE", False), ("FAIL", True), ("COMPLETE", False), ("COMPLETE", False)]
    folders = trial_folders(tmp_path)
    assert len(folders) == 3
    for folder in folders:
        steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
                 if '"train"' in line]
        assert steps == sorted(set(steps)) == list(range(1, len(steps) + 1)), f"{folder.name}: one pass {steps}"


def test_changed_choices_of_a_categorical_parameter_are_refused_with_what_to_do(tmp_path):
    from optuna.distributions import CategoricalDistribution

    from nlpkit.errors import NlpkitError
    from nlpkit.sweep.driver import _same_choices

    recipe = load_recipe(write(tmp_path, "  parameters:\n    models.lstm.hidden_size: {type: categorical, "
                                         "choices: [4, 8]}\n"))
    sweep = load_sweep(recipe, registry())
    held = optuna.create_study()
    held.add_trial(optuna.trial.create_trial(params={"models.lstm.hidden_size": 4}, value=0.5,
                                             distributions={"models.lstm.hidden_size": CategoricalDistribution([4])}))
    with pytest.raises(NlpkitError, match=r"holds trials with the choices \[4\], the recipe now names \[4, 8\]"):
        _same_choices(held, {"models.lstm.hidden_size": CategoricalDistribution([4, 8])}, sweep)
    _same_choices(held, {"models.lstm.hidden_size": CategoricalDistribution([4])}, sweep)  # unchanged: fine
