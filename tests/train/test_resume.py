"""Checkpoints and exact resume: a run killed with SIGKILL (before its first checkpoint, and right where a
checkpoint was due) and run again ends exactly like
the uninterrupted run (same batches, same dropout masks: dropout is on); SIGTERM writes a checkpoint and
exits cleanly; a truncated checkpoint is skipped for the one before; checkpoints hold plain data only."""

import functools
import hashlib
import json
import logging
import random
import signal
import subprocess

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from training_utils import (
    PYTHON,
    SIGNAL_AT_STEP,
    env,
    outcome,
    run_folder,
    share_initial_model,
    signal_at_step,
    write_recipe,
)

from nlpkit.cli import main
from nlpkit.run import pool as jobs
from nlpkit.train import checkpoint as ckpt

RECIPE = """\
name: tiny
task: {name: classification, dataset: toy_topics, dataset_options: {train_size: 96, eval_size: 32}}
models:
  lstm: {vocab_size: 300, embedding_dim: 16, hidden_size: 16, dropout: 0.3}
train: {epochs: 3, batch_size: 8, lr: 1.0e-2, log_every: 1, eval_every: 5, checkpoint_every: 4,
        keep_checkpoints: 2, early_stopping: 4, progress: false}
seeds: [1]
"""
VARIANTS = ("reference", "sigkill-3", "sigkill-8", "sigterm", "truncated")


@pytest.fixture(scope="module")
def one_thread():
    """Children run with one thread (OMP_NUM_THREADS=1); so does this process, or float sums could differ."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """The uninterrupted run, and a recipe whose other outputs start from the same initial model."""
    root = tmp_path_factory.mktemp("resume")
    recipe = write_recipe(root, RECIPE)
    share_initial_model(recipe, [root / v for v in VARIANTS])
    result = CliRunner().invoke(main, ["run", str(recipe), "--set", f"output={root / 'reference'}", "--set", f"reports={root / 'reference'}/reports"])
    assert result.exit_code == 0, result.output
    folder = run_folder(root / "reference")
    assert not (folder / "checkpoints").exists(), "a finished run keeps no checkpoints"
    return root, recipe, outcome(folder)


def run(recipe, output, *extra):
    return CliRunner().invoke(main, ["run", str(recipe), "--set", f"output={output}", "--set",
                                     f"reports={output}/reports", *extra])


def stop_at(monkeypatch, step: int) -> None:
    """SIGTERM the run's own process right after the train log line of ``step``."""
    monkeypatch.setattr(jobs, "CHILD_SETUP", [functools.partial(signal_at_step, step, int(signal.SIGTERM))])


@pytest.mark.parametrize("step", [3, 8])  # no checkpoint yet; killed after step 8's log line, before its checkpoint
def test_sigkill_then_rerun_ends_like_the_uninterrupted_run(reference, step):
    root, recipe, expected = reference
    assert step < expected["steps"]
    output = root / f"sigkill-{step}"
    killed = subprocess.run([PYTHON, "-c", SIGNAL_AT_STEP, str(step), str(int(signal.SIGKILL)), "run", str(recipe),
                             "--set", f"output={output}", "--set", f"reports={output}/reports"], env=env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, f"killed at step {step}: {killed.stderr[-2000:]}"
    folder = run_folder(output)
    assert not (folder / "results.json").exists()
    last = (step - 1) // 4 * 4  # the checkpoint of `step` itself comes after its log line: never written
    assert ckpt.latest_step(folder / "checkpoints") == (last or None), f"killed at step {step}"
    assert (folder / ".lock").exists(), "SIGKILL leaves the lock file behind"

    again = run(recipe, output)  # takes the stale lock over
    assert again.exit_code == 0, again.output
    if last:
        assert f"resuming from the checkpoint at step {last}" in again.output
    assert json.loads((folder / "results.json").read_text())["resumed_from_step"] == last
    assert outcome(folder) == expected, f"killed at step {step}"
    assert not (folder / ".lock").exists() and not (folder / "checkpoints").exists()


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(reference, monkeypatch):
    root, recipe, expected = reference
    output = root / "sigterm"
    folder = run_folder(output)
    stop_at(monkeypatch, 10)
    stopped = run(recipe, output)
    assert stopped.exit_code == 128 + signal.SIGTERM
    assert stopped.exception is None or isinstance(stopped.exception, SystemExit)  # no traceback
    assert "Stopped by signal 15: checkpoint at step 10" in stopped.output
    assert ckpt.latest_step(folder / "checkpoints") == 10 and not (folder / "results.json").exists()
    assert not (folder / ".lock").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the loop's handler is gone again
    monkeypatch.undo()

    again = run(recipe, output)
    assert again.exit_code == 0, again.output
    assert "resuming from the checkpoint at step 10" in again.output
    assert outcome(folder) == expected


def test_truncated_checkpoint_falls_back_to_the_previous_one(reference, monkeypatch, capfd):
    root, recipe, expected = reference
    output = root / "truncated"
    folder = run_folder(output)
    stop_at(monkeypatch, 10)
    assert run(recipe, output).exit_code == 128 + signal.SIGTERM
    monkeypatch.undo()
    newest = folder / "checkpoints" / "step-00000010.pt"
    assert sorted(p.name for p in newest.parent.glob("*.pt")) == ["step-00000008.pt", "step-00000010.pt"]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    capfd.readouterr()
    again = run(recipe, output)
    assert again.exit_code == 0, again.output
    warned = capfd.readouterr().err  # the run's own process logs the warning, to the stderr it shares
    assert "step-00000010.pt" in warned and "checksum" in warned, warned
    assert json.loads((folder / "results.json").read_text())["resumed_from_step"] == 8
    assert outcome(folder) == expected


# --- the checkpoint files themselves ----------------------------------------------------------------


def test_keeps_the_last_k_and_round_trips_tensors(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save(tmp_path, step, {"w": torch.full((2, 2), float(step)), "step": step}, keep=2)
    assert [p.name for p in ckpt.manifests(tmp_path)] == ["step-00000004.json", "step-00000003.json"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-00000003.pt", "step-00000004.pt"]
    manifest, state = ckpt.latest(tmp_path)
    assert manifest.name == "step-00000004.json" and torch.equal(state["w"], torch.full((2, 2), 4.0))


class Payload:
    """Stands for anything but plain data: unpickling it could run code."""


def test_refuses_pickled_objects_and_ignores_a_checkpoint_without_manifest(tmp_path, caplog):
    ckpt.save(tmp_path, 1, {"w": torch.ones(1)})
    ckpt.save(tmp_path, 2, {"w": torch.ones(1)})
    (tmp_path / "step-00000003.pt").write_bytes(b"cut off before its manifest was written")
    evil = tmp_path / "step-00000002.pt"  # replaced by a pickle of an object, with a matching checksum
    torch.save({"w": Payload()}, evil)
    data = evil.read_bytes()
    meta = json.loads(evil.with_suffix(".json").read_text())
    meta.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    evil.with_suffix(".json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="nlpkit.train.checkpoint"):
        manifest, state = ckpt.latest(tmp_path)
    assert manifest.name == "step-00000001.json"
    assert any("not a plain-data checkpoint" in r.getMessage() for r in caplog.records)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    ckpt.save(tmp_path, 1, {"rng": [ckpt.rng_state()]})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    _, state = ckpt.latest(tmp_path)
    ckpt.set_rng_state(state["rng"][0])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])


def test_restart_ignores_the_checkpoints_of_an_unfinished_run(reference, monkeypatch):
    root, recipe, _ = reference
    output = root / "restart"
    folder = run_folder(output)
    stop_at(monkeypatch, 6)
    assert run(recipe, output).exit_code == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert "[resumes at step 6]" in CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--set", f"output={output}", "--set", f"reports={output}/reports"]).output
    again = CliRunner().invoke(main, ["run", str(recipe), "--restart", "--set", f"output={output}", "--set", f"reports={output}/reports"])
    assert again.exit_code == 0, again.output
    assert "resuming" not in again.output
    assert json.loads((folder / "results.json").read_text())["resumed_from_step"] == 0
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
             if '"train"' in line]
    assert steps == list(range(1, len(steps) + 1)), "the stopped attempt's log lines are gone"


def test_an_unfinished_run_with_other_settings_moves_aside_with_its_checkpoint(reference, monkeypatch):
    root, recipe, _ = reference
    output = root / "changed"
    folder = run_folder(output)
    stop_at(monkeypatch, 6)
    assert run(recipe, output).exit_code == 128 + signal.SIGTERM
    before = yaml.safe_load((folder / "recipe.yaml").read_text())["settings_hash"]

    stop_at(monkeypatch, 3)  # other settings: the old run moves aside whole, the new one starts from step 0
    changed = run(recipe, output, "--set", "train.lr=0.02")
    assert changed.exit_code == 128 + signal.SIGTERM, changed.output
    aside = folder.with_name(f"{folder.name}@{before}")
    assert f"the interrupted run there was made with other settings ({before}" in changed.output
    assert f"moved it to {aside}" in changed.output
    assert ckpt.latest_step(aside / "checkpoints") == 6, "the old run's checkpoint moved with it, intact"
    assert yaml.safe_load((aside / "recipe.yaml").read_text())["train"]["lr"] == 0.01
    assert ckpt.latest_step(folder / "checkpoints") == 3 and "resuming" not in changed.output
    monkeypatch.undo()

    quiet = run(recipe, output, "--set", "train.lr=0.02", "--set", "train.log_every=2")
    assert quiet.exit_code == 0, quiet.output  # logging is not a setting of the run: it resumes
    assert "resuming from the checkpoint at step 3" in quiet.output and "moved it" not in quiet.output
    res = json.loads((folder / "results.json").read_text())
    assert res["resumed_from_step"] == 3 and res["settings_hash"] != before
    assert res["settings_hash"] == res["provenance"]["settings_hash"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, aside.name]
