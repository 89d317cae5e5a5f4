"""``nlpkit new-plugin``: each kind of generated package installs, passes its own conformance tests, shows up
in ``nlpkit plugins`` with its distribution, and runs in its example recipe; bad names are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.errors import NlpkitError
from nlpkit.scaffold import new_plugin, validate_name
from nlpkit.testing import install_package, plugins_on_path

KINDS = {"model": "scaf_model", "task": "scaf_task", "dataset": "scaf_data",
         "model,task,dataset,metric,report": "scaf_all"}  # one package holding a plugin of every kind
METRIC = '''import nlpkit


@nlpkit.hookimpl
def register_metrics(register):
    register("predicted_zero", lambda examples, predictions: sum(p["prediction"] == 0 for p in predictions))
'''


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The three packages, generated with the CLI and installed into one site folder (+ a metric plugin)."""
    root = tmp_path_factory.mktemp("scaffold")
    site = root / "site"
    folders = {}
    for kind, name in KINDS.items():
        result = CliRunner().invoke(main, ["new-plugin", name, "--kind", kind, "-o", str(root / name)])
        assert result.exit_code == 0, result.output
        folders[kind] = root / name
        install_package(folders[kind], site)
    metric = root / "metric"
    metric.mkdir()
    (metric / "nlpkit_metric.py").write_text(METRIC)
    (metric / "pyproject.toml").write_text('[project]\nname = "nlpkit-metric"\nversion = "1.0"\n'
                                           '[project.entry-points.nlpkit]\nmetric = "nlpkit_metric"\n')
    install_package(metric, site)
    return site, folders


@pytest.fixture
def installed(generated):
    site, folders = generated
    with plugins_on_path(site):
        yield folders


def test_files_and_entry_point(generated):
    _, folders = generated
    model = folders["model"]
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file()) == [
        "README.md", "nlpkit_scaf_model/__init__.py", "nlpkit_scaf_model/model.py", "pyproject.toml", "recipe.yaml",
        "tests/test_scaf_model_model.py"]
    assert 'scaf_model = "nlpkit_scaf_model"' in (model / "pyproject.toml").read_text()
    assert "`embedding_dim` (default `64`)" in (model / "README.md").read_text()
    assert (folders["dataset"] / "data" / "train.tsv").read_text().count("\t") == 40
    every = folders["model,task,dataset,metric,report"]
    assert sorted(p.name for p in (every / "nlpkit_scaf_all").glob("*.py")) == [
        "__init__.py", "dataset.py", "metric.py", "model.py", "report.py", "task.py"]
    assert sorted(p.name for p in (every / "tests").glob("*.py")) == [
        "test_scaf_all_dataset.py", "test_scaf_all_metric.py", "test_scaf_all_model.py", "test_scaf_all_report.py",
        "test_scaf_all_task.py"]


def test_generated_packages_pass_ruff(generated):
    """The templates are lint-clean where they land: in a package of their own, under its pyproject's ruff
    settings (nlpkit is a third-party import there)."""
    _, folders = generated
    for folder in folders.values():
        result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], capture_output=True,
                                text=True, cwd=folder, timeout=120)
        assert result.returncode == 0, f"{folder.name}: {result.stdout[-3000:]}{result.stderr[-1000:]}"


def test_generated_packages_pass_their_own_conformance_tests(generated):
    """What the plugin's author runs: pytest in the package, against the installed plugin."""
    site, folders = generated
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    tests = [str(folder / "tests") for folder in folders.values()]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", *tests],
                            capture_output=True, text=True, env=env, cwd=site.parent, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and int(summary.split()[0]) >= 33, summary


def test_listed_with_distribution_and_options(installed):
    listing = CliRunner().invoke(main, ["plugins", "--json"])
    info = json.loads(listing.output)
    assert info["models"]["scaf_model"] == {"source": "nlpkit-scaf-model 0.1.0", "serves": ["classification"]}
    assert info["tasks"]["scaf_task"]["source"] == "nlpkit-scaf-task 0.1.0"
    assert info["datasets"]["scaf_data"] == {"source": "nlpkit-scaf-data 0.1.0", "kind": "classification"}
    options = CliRunner().invoke(main, ["plugins", "--options", "scaf_model"]).output
    assert any(line.split() == ["embedding_dim", "int", "64"] for line in options.splitlines())


def run_recipe(folder: Path, out: Path, *extra: str) -> dict:
    args = ["run", str(folder / "recipe.yaml"), "--set", f"output={out}/runs", "--set", f"reports={out}/reports",
            *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (path,) = (out / "runs").rglob("results.json")
    return json.loads(path.read_text())


def test_model_recipe_trains(installed, tmp_path):
    results = run_recipe(installed["model"], tmp_path)
    assert results["plugin"] == "scaf_model"
    assert results["test"]["accuracy"] > 0.5  # 4 topics: chance is 0.25; a bag of words learns them


def test_task_recipe_scores_with_its_metric_and_a_registered_one(installed, tmp_path):
    results = run_recipe(installed["task"], tmp_path, "--set", "task.options.metrics=[predicted_zero]",
                         "--set", "models.lstm.epochs=1")
    assert results["task"] == "scaf_task" and results["main_metric"] == "mcc"
    assert -1.0 <= results["test"]["mcc"] <= 1.0 and 0 <= results["test"]["predicted_zero"] <= 50


def test_task_rejects_an_unknown_metric_before_training(installed, tmp_path):
    args = ["run", str(installed["task"] / "recipe.yaml"), "--set", f"output={tmp_path}",
            "--set", "task.options.metrics=[predicted_zeros]"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Error: task 'scaf_task': unknown metric 'predicted_zeros' in options.metrics. " \
        "Did you mean 'predicted_zero'?" in result.output
    assert not list(tmp_path.rglob("metrics.jsonl"))  # nothing trained


def test_dataset_recipe_reads_its_files(installed, tmp_path, monkeypatch):
    monkeypatch.chdir(installed["dataset"])  # the recipe's data_dir is relative
    results = run_recipe(installed["dataset"], tmp_path, "--set", "models.lstm.epochs=1")
    assert results["dataset"] == "scaf_data" and results["train_examples"] == 40
    assert sorted(results["labels"]) == ["music", "sport"]


@pytest.mark.parametrize("name, message", [
    ("my-model", "not a valid plugin name.*e.g. 'my_model'"),
    ("MyModel", "not a valid plugin name"),
    ("9lives", "not a valid plugin name"),
    ("lambda", "not a valid plugin name"),
    ("lstm", "'lstm' is already a model plugin, from nlpkit"),
    ("toy_topics", "'toy_topics' is already a dataset plugin"),
])
def test_bad_names_are_refused(name, message):
    with pytest.raises(NlpkitError, match=message):
        validate_name(name, "model")


def test_clash_with_an_installed_third_party_plugin(installed):
    with pytest.raises(NlpkitError, match="'scaf_task' is already a task plugin, from nlpkit-scaf-task 0.1.0"):
        validate_name("scaf_task", "dataset")
    with pytest.raises(NlpkitError, match="already an nlpkit entry point, from nlpkit-metric 1.0"):
        validate_name("metric", "model")


def test_refuses_a_non_empty_folder_and_prints_errors_cleanly(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(NlpkitError, match="exists and is not empty"):
        new_plugin("fresh_name", "model", tmp_path)
    result = CliRunner().invoke(main, ["new-plugin", "bad-name", "--kind", "model", "-o", str(tmp_path / "n")])
    assert result.exit_code == 2 and "Error: 'bad-name' is not a valid plugin name" in result.output
    assert not (tmp_path / "n").exists()


def test_package_style_name_names_the_plugin(tmp_path):
    """`nlpkit new-plugin nlpkit-cnn` (the distribution's name) makes the plugin 'cnn' in package nlpkit-cnn."""
    folder, _, plan = new_plugin("nlpkit-cnn", "model", tmp_path / "pkg")
    pyproject = (folder / "pyproject.toml").read_text()
    assert plan.name == "cnn" and 'name = "nlpkit-cnn"' in pyproject and 'cnn = "nlpkit_cnn"' in pyproject
    result = CliRunner().invoke(main, ["new-plugin", "nlpkit-cnn", "--kind", "model,task", "-o", str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Created model and task plugins 'cnn' in package nlpkit-cnn (")


def test_unknown_kind_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["new-plugin", "cnn", "--kind", "model,modle", "-o", str(tmp_path / "n")])
    assert result.exit_code == 2 and "--kind takes one or more of model, task, dataset, metric, report" in result.output


def test_every_kind_in_one_package_runs_its_recipe(installed, tmp_path, monkeypatch):
    """The scaf_all recipe: its own dataset, task (asking for its own metric) and model, and its report section."""
    folder = installed["model,task,dataset,metric,report"]
    monkeypatch.chdir(folder)  # the recipe's data_dir is relative
    results = run_recipe(folder, tmp_path, "--set", "models.scaf_all.epochs=1")
    assert results["plugin"] == "scaf_all" and results["task"] == "scaf_all" and results["dataset"] == "scaf_all"
    assert 0 <= results["test"]["scaf_all"] <= 1  # the package's metric, asked for by its task
    report = next((tmp_path / "reports").rglob("report.md")).read_text()
    assert "runs at a glance (scaf_all)" in report
