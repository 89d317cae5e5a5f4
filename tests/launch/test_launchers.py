"""The launchers carry out a recipe's runs to the same numbers as a plain ``nlpkit run``: ``ray`` on a local Ray
instance (one for the module: Ray starts slowly), ``slurm`` through submitit's local executor, where one run's job
is preempted mid-training (SIGUSR2, as Slurm sends it), checkpoints, is requeued and resumes to the metrics,
logs and weights of the uninterrupted run. All three start from one shared initial model (see training_utils)."""

import functools
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from training_utils import outcome, share_initial_model, signal_run_at_step, write_recipe

from nlpkit.cli import main
from nlpkit.run import pool

RECIPE = """\
name: tiny
task: {name: classification, dataset: toy_topics, dataset_options: {train_size: 64, eval_size: 16}}
models:
  lstm: {vocab_size: 200, embedding_dim: 16, hidden_size: 16, dropout: 0.0}
train: {epochs: 2, batch_size: 16, lr: 1.0e-2, log_every: 1, progress: false, precision: fp32, threads: 1}
seeds: [1, 2]
"""
NAMES = ["classification-lstm-seed1", "classification-lstm-seed2"]
PREEMPTED = "classification-lstm-seed2"


def run_cli(recipe, out, *args):
    result = CliRunner().invoke(main, ["run", str(recipe), "--set", f"output={out / 'runs'}",
                                       "--set", f"reports={out / 'reports'}", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The recipe run plainly, through the ray launcher and through the slurm launcher (submitit locally, one run
    preempted at step 3)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("submitit")
    root = tmp_path_factory.mktemp("launch")
    recipe = write_recipe(root, RECIPE)
    share_initial_model(recipe, [root / name / "runs" for name in ("plain", "ray", "slurm")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NLPKIT_IN_PROCESS", "1")  # the reference: no process to start
        outputs = {"plain": run_cli(recipe, root / "plain")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # by id, then by shard: each time the report compares the runs made so far
        outputs["ray"] = run_cli(recipe, root / "ray", "--ray", "cpus_per_run=1", "--only", NAMES[0])
        outputs["ray"] += run_cli(recipe, root / "ray", "--ray", "cpus_per_run=1", "--shard", "2/2")
    finally:
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:  # the submitit job (a fresh python) imports the fault from here
        patch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]))
        patch.setattr(pool, "CHILD_SETUP", [functools.partial(signal_run_at_step, PREEMPTED, 3, signal.SIGUSR2)])
        outputs["slurm"] = run_cli(recipe, root / "slurm", "--slurm",
                                   "cluster=local,time=60,array_parallelism=2,poll_s=0.2")
    return root, outputs


def folder(root, how, name):
    return root / how / "runs" / "tiny" / name


def test_the_ray_launcher_runs_the_matrix_to_the_plain_runs_numbers(launched):
    root, outputs = launched
    assert outputs["ray"].count("Running 1 run as Ray tasks") == 2 and outputs["ray"].count("Report:") == 2
    for name in NAMES:
        assert outcome(folder(root, "ray", name)) == outcome(folder(root, "plain", name)), name
    assert (root / "ray" / "reports" / "tiny" / "results.csv").exists()  # the report, after the launcher returned


def test_the_slurm_launcher_through_submitit_runs_the_matrix_to_the_plain_runs_numbers(launched):
    root, outputs = launched
    assert "Submitting 2 runs to submitit locally" in outputs["slurm"] and "Report:" in outputs["slurm"]
    for name in NAMES:
        assert outcome(folder(root, "slurm", name)) == outcome(folder(root, "plain", name)), name


def test_a_preempted_slurm_job_is_requeued_and_resumes_where_it_stopped(launched):
    root, _ = launched
    preempted = json.loads((folder(root, "slurm", PREEMPTED) / "results.json").read_text())
    assert preempted["resumed_from_step"] in (3, 4), preempted["resumed_from_step"]
    other = json.loads((folder(root, "slurm", NAMES[0]) / "results.json").read_text())
    assert other["resumed_from_step"] == 0
    logs = "".join(p.read_text() for p in (root / "slurm" / "runs" / "tiny" / ".submitit").rglob("*.err"))
    assert "Caught signal SIGUSR2" in logs and "this job is preempted" in logs, logs[-2000:]
    assert outcome(folder(root, "slurm", PREEMPTED)) == outcome(folder(root, "plain", PREEMPTED))
    assert [row["step"] for row in outcome(folder(root, "slurm", PREEMPTED))["logs"] if row.get("split") == "train"] \
        == list(range(1, 9)), "every step logged once: no step lost or repeated across the requeue"
