"""What the launchers hand the cluster, without a cluster: the sbatch script of the slurm launcher (a fake srun on
PATH makes submitit believe it is on a Slurm login node), and the clear messages when Slurm or a library is missing."""

import sys

import pytest
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.errors import NlpkitError

RECIPE = """\
name: tiny
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 32, eval_size: 16}}}}
models:
  lstm: {{vocab_size: 100, embedding_dim: 8, hidden_size: 8}}
train: {{epochs: 1, batch_size: 16}}
"""


def test_the_sbatch_script_carries_each_runs_resources_and_the_checkpoint_signal(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from nlpkit_plugins.launchers.slurm import SlurmLauncher, SlurmOptions, minutes

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    options = SlurmOptions(partition="gpu", account="lab", gpus_per_run=1, cpus_per_run=4, mem="16G",
                           time="1-02:30:00", signal_delay_s=300)
    script = SlurmLauncher(options).executor(tmp_path / "jobs" / "%j")._make_submission_file_text("python -m x", "u")
    for line in ["#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G", f"#SBATCH --time={minutes('1-02:30:00')}",
                 "#SBATCH --signal=USR2@300"]:
        assert line in script, (line, script)
    assert minutes("1-02:30:00") == 24 * 60 + 150 and minutes("04:00:00") == 240 and minutes("90") == 90


def test_slurm_without_slurm_says_so_and_offers_the_local_executor(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from nlpkit_plugins.launchers.slurm import SlurmLauncher, SlurmOptions

    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    with pytest.raises(NlpkitError, match="no Slurm on this machine.*--slurm cluster=local"):
        SlurmLauncher(SlurmOptions()).executor(tmp_path / "jobs")


@pytest.mark.parametrize("flag, extra", [("--slurm", "slurm"), ("--ray", "ray")])
def test_a_missing_library_names_the_extra_to_install(tmp_path, monkeypatch, flag, extra):
    monkeypatch.setitem(sys.modules, "submitit" if extra == "slurm" else "ray", None)  # import fails
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    result = CliRunner().invoke(main, ["run", str(recipe), flag, ""])
    assert result.exit_code == 2, result.output
    assert f"pip install -e '.[{extra}]'" in result.output


def test_plugins_lists_the_launchers_and_their_options():
    import json

    listed = CliRunner().invoke(main, ["plugins", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {"local", "slurm", "ray"} <= set(json.loads(listed.output)["launchers"])
    options = CliRunner().invoke(main, ["plugins", "--options", "slurm"])
    assert options.exit_code == 0 and "nlpkit run --launcher slurm --launcher-options" in options.output
    assert "partition" in options.output and "signal_delay_s" in options.output
