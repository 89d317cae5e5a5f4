"""Tracking through the built-in tensorboard and mlflow trackers, read back with each tool's own reader
(TensorBoard's EventAccumulator, MLflow's MlflowClient); tracking leaves settings hashes alone; an unknown tracker
is a recipe error; a tracker that raises is switched off without failing the run; a missing library is an error
before any run starts."""

import json
import logging
import re

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nlpkit.cli import main
from nlpkit.config.recipe import load_recipe
from nlpkit.errors import NlpkitError
from nlpkit.plugins import registry
from nlpkit.testing import install_package, one_module_plugin, plugins_on_path
from nlpkit.track.report import attach_report
from nlpkit.train.checkpoint import latest_step
from nlpkit.train.log import MetricsLog

RECIPE = """\
name: tracked
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 64, eval_size: 16}}}}
models:
  lstm: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8}}
train: {{max_steps: 8, batch_size: 16, eval_every: 2, log_every: 1, checkpoint_every: 3, progress: false,
        precision: fp32}}
seeds: [1]
"""


def scalars(folder, tag):
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def logged(folder, split, key):
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row[key]) for row in rows if row["split"] == split]


def same_points(actual, expected):
    """The same steps, and the same values as float32 (TensorBoard stores them so)."""
    assert [step for step, _ in actual] == [step for step, _ in expected]
    assert [value for _, value in actual] == pytest.approx([value for _, value in expected], rel=1e-6)
    return True


class PowerCut(Exception):
    """Stands for a crash: raised right after the train log line of a step, before any hook hears of it."""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tracked run that crashes right after the train log line of step 5 (no tracker hears of step 5), its last
    checkpoint at step 3, both trackers having logged step 4 (a log line and an evaluation); then run again: it
    resumes from step 3 and logs steps 4 to 8. In this process (fast); a real SIGKILL is the same story for the
    trackers. Returns the recipe, the run folder and tracking.json after the crash."""
    out = tmp_path_factory.mktemp("tracked")
    recipe = out / "tracked.yaml"
    recipe.write_text(RECIPE.format(out=out))
    command = ["run", str(recipe), "--no-report", "--track", "tensorboard,mlflow"]
    log = MetricsLog.__call__

    def crash_at_step_5(self, **row):
        log(self, **row)
        if row.get("split") == "train" and row.get("step") == 5:
            raise PowerCut("the power went out at step 5")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NLPKIT_IN_PROCESS", "1")
        patch.setattr(MetricsLog, "__call__", crash_at_step_5)
        crashed = CliRunner().invoke(main, command)
        assert crashed.exit_code == 2 and "the power went out at step 5" in crashed.output, crashed.output
        folder = out / "runs" / "tracked" / "classification-lstm-seed1"
        assert latest_step(folder / "checkpoints") == 3
        before = json.loads((folder / "tracking.json").read_text())
        patch.setattr(MetricsLog, "__call__", log)
        again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    assert "resuming from the checkpoint at step 3" in again.output
    return recipe, folder, before


def test_tensorboard_shows_one_continuous_curve_across_the_kill(tracked):
    _, folder, _ = tracked
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # one file per attempt
    loss = scalars(folder, "train/loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5, 6, 7, 8]  # step 4 logged twice, shown once
    assert same_points(loss, logged(folder, "train", "loss"))
    assert same_points(scalars(folder, "validation/accuracy"), logged(folder, "validation", "accuracy"))
    assert [step for step, _ in scalars(folder, "validation/accuracy")] == [2, 4, 6, 8]
    results = json.loads((folder / "results.json").read_text())
    assert results["resumed_from_step"] == 3
    assert same_points(scalars(folder, "test/accuracy"), [(8, results["test"]["accuracy"])])
    events = EventAccumulator(str(folder))
    events.Reload()
    assert "recipe/text_summary" in events.Tags()["tensors"]
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")


def test_mlflow_continues_the_same_run_with_one_point_per_step(tracked):
    _, folder, before = tracked
    saved = json.loads((folder / "tracking.json").read_text())["mlflow"]
    assert saved == before["mlflow"]
    assert saved["tracking_uri"] == f"sqlite:///{folder.parent.resolve() / 'mlflow.db'}"
    client = MlflowClient(saved["tracking_uri"])
    experiment = client.get_experiment(saved["experiment_id"])
    assert experiment.name == "tracked"
    assert [r.info.run_id for r in client.search_runs([saved["experiment_id"]])] == [saved["run_id"]]
    run = client.get_run(saved["run_id"])
    assert run.info.run_name == "classification-lstm-seed1" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.max_steps"] == "8" and params["model_options.hidden_size"] == "8"
    assert params["task.dataset"] == "toy_topics"
    recipe_yaml = (folder / "recipe.yaml").read_text()
    tags = run.data.tags
    assert {tags[k] for k in ("task", "model", "plugin", "seed", "dataset")} == {"classification", "lstm", "1",
                                                                                   "toy_topics"}
    assert f"settings_hash: {tags['settings_hash']}" in recipe_yaml
    assert any(key.startswith("provenance.") for key in tags)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert [step for step, _ in history] == [1, 2, 3, 4, 5, 6, 7, 8]  # step 4: the first attempt's point only
    assert same_points(history, logged(folder, "train", "loss"))  # resume is exact: the kept point is the same
    evaluations = sorted(m.step for m in client.get_metric_history(run.info.run_id, "validation/accuracy"))
    assert evaluations == [2, 4, 6, 8]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model", "results.json", "recipe.yaml"}
    assert "model/model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}


def test_tracking_leaves_the_settings_hash_and_finished_runs_alone(tracked):
    recipe, folder, _ = tracked
    plain, with_track = load_recipe(recipe).runs[0], load_recipe(recipe, ["track=[tensorboard, mlflow]"]).runs[0]
    assert with_track.track == ["tensorboard", "mlflow"] and plain.track == []
    assert plain.settings_hash == with_track.settings_hash
    assert "tensorboard" not in (folder / "recipe.yaml").read_text()
    plan = CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--track", "tensorboard"]).output
    assert "1 runs, tracked by tensorboard" in plan and "[finished]" in plan, plan
    again = CliRunner().invoke(main, ["run", str(recipe), "--no-report"])  # the same run, not tracked now
    assert again.exit_code == 0 and "finished, skipping" in again.output, again.output
    assert [p.name for p in folder.parent.iterdir() if "classification-lstm-seed1" in p.name] == [folder.name]


def test_an_unknown_tracker_is_a_recipe_error_with_its_line(tmp_path):
    recipe = tmp_path / "tracked.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path) + "track: [tensorboard, mlfow]\n")
    with pytest.raises(NlpkitError, match=re.escape("tracked.yaml, line 10: unknown tracker 'mlfow'. Did you mean "
                                                    "'mlflow'?")):
        load_recipe(recipe)


BROKEN = '''\
import nlpkit


class Boom(nlpkit.Tracker):
    name = "boom"

    def log_scalars(self, step, scalars):
        raise RuntimeError(f"the tracking server is down (step {step})")


class Needy(nlpkit.Tracker):
    name = "needy"
    requires = ("no_such_tracking_library",)
    install_hint = "pip install no-such-tracking-library"


@nlpkit.hookimpl
def register_trackers(register):
    register(Boom)
    register(Needy)
'''


@pytest.fixture
def broken_trackers(tmp_path):
    package = one_module_plugin(tmp_path / "src" / "broken_trackers", "broken_trackers", BROKEN)
    install_package(package, tmp_path / "site")
    with plugins_on_path(tmp_path / "site"):
        yield


def test_a_tracker_that_raises_is_switched_off_and_the_run_finishes(broken_trackers, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NLPKIT_IN_PROCESS", "1")  # the run in this process: its warnings reach caplog
    recipe = tmp_path / "tracked.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    with caplog.at_level(logging.WARNING, logger="nlpkit.track"):
        result = CliRunner().invoke(main, ["run", str(recipe), "--no-report", "--track", "boom,tensorboard"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tracked" / "classification-lstm-seed1"
    assert (folder / "results.json").exists()
    warned = [r.getMessage() for r in caplog.records if r.name == "nlpkit.track"]
    assert len(warned) == 1, warned  # once, though log_scalars is called at every step
    assert "tracker 'boom' failed in log_scalars (RuntimeError: the tracking server is down (step 1))" in warned[0]
    assert [step for step, _ in scalars(folder, "train/loss")] == list(range(1, 9))  # the other tracker went on


def test_a_missing_library_is_an_error_before_any_run_starts(broken_trackers, tmp_path):
    recipe = tmp_path / "tracked.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    result = CliRunner().invoke(main, ["run", str(recipe), "--track", "needy"])
    assert result.exit_code == 2
    assert ("tracker 'needy' needs no_such_tracking_library: pip install no-such-tracking-library"
            in result.output)
    assert not (tmp_path / "runs").exists()


def test_the_comparison_report_is_attached_to_the_mlflow_run(tracked, tmp_path):
    recipe, folder, _ = tracked
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    (report / "figures" / "learning_curves.png").write_bytes(b"\x89PNG not really")
    (report / "summary.md").write_text("| model | accuracy |\n")
    specs = load_recipe(recipe, ["track=[tensorboard, mlflow]"]).runs
    attach_report(specs, report, registry())
    saved = json.loads((folder / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(saved["tracking_uri"])
    assert {a.path for a in client.list_artifacts(saved["run_id"], "report")} == {"report/figures",
                                                                                   "report/summary.md"}
    assert [a.path for a in client.list_artifacts(saved["run_id"], "report/figures")] == [
        "report/figures/learning_curves.png"]
