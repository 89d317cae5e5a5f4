"""``--jobs``: runs of a matrix side by side, never two processes in one run folder; the run-folder lock."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.run.folders import RunLocked, run_lock
from nlpkit.run.pool import cpu_cores

RECIPE = """\
name: matrix
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 64, eval_size: 16}}}}
models:
  lstm: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8}}
  attention: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8, attention_size: 4}}
train: {{epochs: 1, batch_size: 16, log_every: 1, checkpoint_every: 2}}
seeds: [1, 2]
"""


def test_jobs_2_finishes_a_4_run_matrix_and_leaves_a_run_held_by_another_process_alone(tmp_path):
    recipe = tmp_path / "matrix.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    folders = {(m, s): tmp_path / "runs" / "matrix" / f"classification-{m}-seed{s}"
               for m in ("lstm", "attention") for s in (1, 2)}
    held = folders[("attention", 2)]
    with run_lock(held):  # as if another `nlpkit run` were training it
        first = CliRunner().invoke(main, ["run", str(recipe), "--jobs", "2"])
    assert first.exit_code == 0, first.output
    assert "Running 4 runs, 2 at a time" in first.output
    assert "classification-attention-seed2: skipped" in first.output and "in use by process" in first.output
    assert [p.name for p in held.iterdir()] == [], "the held run's folder was left alone"

    second = CliRunner().invoke(main, ["run", str(recipe), "--jobs", "2"])
    assert second.exit_code == 0, second.output
    assert second.output.count("finished, skipping") == 3  # and the one left runs in this process: no pool

    for (model, seed), folder in folders.items():
        res = json.loads((folder / "results.json").read_text())
        assert (res["model"], res["seed"]) == (model, seed)
        steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
                 if '"train"' in line]
        assert steps == [1, 2, 3, 4], f"{folder.name}: one writer, one pass: {steps}"
        assert not (folder / ".lock").exists() and not (folder / "checkpoints").exists()
    devices = {json.loads((f / "results.json").read_text())["device"] for f in folders.values() if f != held}
    assert all(f"({max(1, cpu_cores() // 2)} thread" in d for d in devices), devices  # the cores shared by 2 jobs


def test_a_second_holder_is_refused_with_the_owner_named(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunLocked, match=r"in use by process .*:\d+"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released: free again
        pass
    assert not (tmp_path / ".lock").exists()


HOLD = textwrap.dedent("""
    import sys, time
    from nlpkit.run.folders import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f":{holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert f":{holder.pid}" in (tmp_path / ".lock").read_text(), "a killed holder leaves its lock file"
    with run_lock(tmp_path):  # stale: taken over
        assert (tmp_path / ".lock").read_text().endswith(f":{os.getpid()}")


def _read(path: Path) -> str:
    """A /proc file's text, or "" when its process ended meanwhile (other processes come and go)."""
    try:
        return path.read_text(errors="ignore")
    except OSError:
        return ""


def test_sigterm_reaches_the_workers_and_no_queued_run_starts(tmp_path):
    import time

    recipe = tmp_path / "matrix.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path).replace("train_size: 64", "train_size: 4096")
                      .replace("epochs: 1", "epochs: 20"))
    proc = subprocess.Popen([sys.executable, "-m", "nlpkit", "run", str(recipe), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    runs = tmp_path / "runs" / "matrix"
    deadline = time.time() + 120
    while sum(p.stat().st_size > 0 for p in runs.glob("*/metrics.jsonl")) < 2 and time.time() < deadline:
        time.sleep(0.2)  # until both workers are training
    workers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
               and f"PPid:\t{proc.pid}\n" in _read(p / "status") and "spawn_main" in _read(p / "cmdline")]
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "Stopped by signal 15" in output
    alive = [pid for pid in workers if _read(Path(f"/proc/{pid}/status")) and "State:\tZ" not in
             _read(Path(f"/proc/{pid}/status"))]
    assert not alive, f"workers outlived nlpkit run: {alive}\n{output}"
    started = sorted(p.parent.name for p in runs.glob("*/metrics.jsonl"))
    assert len(started) == 2, f"only the two running runs may have started: {started}\n{output}"
    assert output.count("not started: nlpkit run was stopped") == 2, output  # the queued two
    for name in started:  # each wrote its checkpoint on the way out
        assert list((runs / name / "checkpoints").glob("*.json")), output
