"""Addressable runs: ``nlpkit plan`` (ids stable across invocations, status read from the folders), ``--only`` and
``--shard`` (every run in exactly one shard), and their errors. No training here: the folders are made by hand."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.config.recipe import load_recipe
from nlpkit.errors import NlpkitError
from nlpkit.launch.plan import parse_shard, select
from nlpkit.run.folders import write_failure
from nlpkit.train import checkpoint

RECIPE = """\
name: grid
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 64, eval_size: 16}}}}
models:
  lstm: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8}}
  attention: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8, attention_size: 4}}
train: {{epochs: 1, batch_size: 16}}
seeds: [1, 2, 3]
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(RECIPE.format(out=tmp_path))
    return path


def plan_json(recipe, *args):
    result = CliRunner().invoke(main, ["plan", str(recipe), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plan_ids_are_stable_across_invocations_and_name_the_folders(recipe, tmp_path):
    first = plan_json(recipe)
    again = subprocess.run([sys.executable, "-m", "nlpkit", "plan", str(recipe), "--json"], capture_output=True,
                           text=True, check=True,  # another process: nothing but the recipe decides the ids
                           env={**os.environ, "NLPKIT_PLUGINS": "classification,toy_topics,lstm,attention"})
    assert json.loads(again.stdout) == first
    assert [r["id"] for r in first] == [f"classification-{m}-seed{s}" for m in ("lstm", "attention") for s in (1, 2, 3)]
    assert all(r["folder"] == str(tmp_path / "runs" / "grid" / r["id"]) for r in first)
    assert len({r["settings_hash"] for r in first}) == 2  # one per model entry; seeds share it
    assert {r["status"] for r in first} == {"to run"}


def test_plan_reads_each_runs_status_from_its_folder(recipe):
    runs = {spec.name: spec for spec in load_recipe(recipe).runs}
    done = runs["classification-lstm-seed1"].folder
    done.mkdir(parents=True)
    (done / "results.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    failed = runs["classification-lstm-seed2"].folder
    failed.mkdir(parents=True)
    write_failure(failed, ValueError("the data ran out"))
    checkpoint.save(runs["classification-attention-seed1"].folder / "checkpoints", 4, {"step": 4})
    rows = {r["id"]: (r["status"], r["detail"]) for r in plan_json(recipe)}
    assert rows["classification-lstm-seed1"] == ("finished", "")
    assert rows["classification-lstm-seed2"] == ("failed", "ValueError: the data ran out")
    assert rows["classification-lstm-seed3"] == ("to run", "")
    status, detail = rows["classification-attention-seed1"]
    assert (status, detail) == ("unfinished", "resumes at step 4")


def test_shards_partition_the_matrix_exactly_round_robin(recipe):
    runs = load_recipe(recipe).runs
    for n in (1, 2, 4, 6, 7):
        shards = [[s.name for s in select(runs, shard=f"{i}/{n}")] for i in range(1, n + 1)]
        flat = [name for shard in shards for name in shard]
        assert sorted(flat) == sorted(s.name for s in runs) and len(flat) == len(runs), (n, shards)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    assert [s.name for s in select(runs, shard="2/4")] == [runs[1].name, runs[5].name]  # positions 2, 6 of 6
    assert [r["id"] for r in plan_json(recipe, "--shard", "2/4")] == [runs[1].name, runs[5].name]


def test_only_picks_runs_by_id_in_recipe_order_and_combines_with_shard(recipe):
    runs = load_recipe(recipe).runs
    picked = select(runs, ["classification-attention-seed2", "classification-lstm-seed1"])
    assert [s.name for s in picked] == ["classification-lstm-seed1", "classification-attention-seed2"]
    assert [s.name for s in select(runs, [s.name for s in runs], "1/2")] == [s.name for s in runs[::2]]


@pytest.mark.parametrize("text", ["2", "0/3", "4/3", "a/b", "1/0", "-1/2", ""])
def test_a_bad_shard_is_a_clear_error(text):
    with pytest.raises(NlpkitError, match="--shard"):
        parse_shard(text)


def test_an_unknown_id_names_the_closest_and_lists_them_all(recipe):
    result = CliRunner().invoke(main, ["run", str(recipe), "--only", "classification-lstm-seed9", "--no-report"])
    assert result.exit_code == 2
    assert "--only classification-lstm-seed9: no run with this id" in result.output
    assert "Did you mean 'classification-lstm-seed" in result.output
    assert "classification-attention-seed3" in result.output  # the whole list


def test_launcher_options_are_checked_like_recipe_keys(recipe):
    result = CliRunner().invoke(main, ["run", str(recipe), "--slurm", "partiton=gpu"])
    assert result.exit_code == 2 and "unknown key 'partiton' for launcher 'slurm'. Did you mean 'partition'?" \
        in result.output
    result = CliRunner().invoke(main, ["run", str(recipe), "--slurm", "time=soon"])
    assert result.exit_code == 2 and "'time'" in result.output and "not a Slurm time limit" in result.output
    result = CliRunner().invoke(main, ["run", str(recipe), "--launcher", "sllurm"])
    assert result.exit_code == 2 and "Can't find 'sllurm' in launchers" in result.output \
        and "Did you mean 'slurm'?" in result.output
    result = CliRunner().invoke(main, ["run", str(recipe), "--ray", "cpus_per_run"])
    assert result.exit_code == 2 and "expected key=value pairs" in result.output
    result = CliRunner().invoke(main, ["run", str(recipe), "--launcher", "ray", "--jobs", "2"])
    assert result.exit_code == 2 and "--jobs 2 is the local launcher's" in result.output


def test_an_empty_shard_has_nothing_to_run_and_says_so(recipe):
    result = CliRunner().invoke(main, ["run", str(recipe), "--shard", "7/8"])  # 6 runs: shards 7 and 8 are empty
    assert result.exit_code == 0 and "Shard 7/8 of the recipe's 6 runs holds none: nothing to run" in result.output
