"""Plugin loading as a third party sees it: a package with its own pyproject and entry point, made here,
is found, listed with its distribution, validated in recipes and run; broken plugins are reported by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.config.recipe import load_recipe
from nlpkit.errors import NlpkitError
from nlpkit.plugins import load_registry, registry
from nlpkit.testing import install_package, plugins_on_path

# A complete third-party model: a mean-of-embeddings classifier with its own typed options.
MODEL = '''
import json
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

import nlpkit
from nlpkit import Model, Options, Output, TaskSpec


class BagOptions(Options):
    dim: int = 16
    buckets: int = 512


class Bag(Model):
    name = "{name}"
    serves = ("classification",)
    why_not = {{"tagging": "a bag of words has no per-token outputs"}}
    Options = BagOptions

    def __init__(self, spec, options):
        super().__init__(spec, options)
        self.embed = nn.EmbeddingBag(options.buckets, options.dim, mode="mean", padding_idx=0)
        self.head = nn.Linear(options.dim, len(spec.labels))

    @classmethod
    def create(cls, spec, options, train):
        return cls(spec, options)

    def save(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({{"plugin": self.name, "spec": self.spec.to_dict(),
                                                        "options": self.options.model_dump()}}))
        save_model(self, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder):
        config = json.loads((folder / "config.json").read_text())
        model = cls(TaskSpec(**config["spec"]), cls.Options(**config["options"]))
        load_model(model, str(folder / "model.safetensors"))
        return model

    def encode(self, example):
        ids = [1 + sum(map(ord, w)) % (self.options.buckets - 1) for w in example["text"].lower().split()] or [1]
        return {{"ids": ids, "length": len(ids), "label": example.get("label", -1)}}

    def collate(self, features):
        ids = torch.zeros(len(features), max(f["length"] for f in features), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : f["length"]] = torch.tensor(f["ids"])
        return {{"ids": ids, "labels": torch.tensor([f["label"] for f in features])}}

    def forward(self, ids, labels=None):
        logits = self.head(self.embed(ids))
        return Output(loss=F.cross_entropy(logits.float(), labels) if labels is not None else None, logits=logits)

    @torch.no_grad()
    def predict(self, batch):
        return [{{"prediction": int(i)}} for i in self(batch["ids"]).logits.argmax(-1)]


@nlpkit.hookimpl
def register_models(register):
    register(Bag)
'''


def make_package(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str],
                 version: str = "0.3.0") -> Path:
    """A plugin package folder as its author would write it: pyproject.toml with the entry points + modules."""
    folder = root / dist
    folder.mkdir(parents=True)
    eps = "".join(f'{k} = "{v}"\n' for k, v in entry_points.items())
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "{dist}"
        version = "{version}"
        dependencies = ["nlpkit"]

        [project.entry-points.nlpkit]
        """) + eps + f"\n[tool.setuptools]\npy-modules = {json.dumps(list(modules))}\n")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)
    return folder


@pytest.fixture
def site(tmp_path, monkeypatch):
    """An empty 'site-packages' on sys.path; packages installed into it are visible to nlpkit."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.delenv("NLPKIT_PLUGINS", raising=False)
    monkeypatch.delenv("NLPKIT_STRICT_PLUGINS", raising=False)
    with plugins_on_path(folder):
        yield folder


def install(site: Path, tmp_path: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    install_package(make_package(tmp_path / "src", dist, modules, entry_points), site)
    from nlpkit import plugins

    plugins.reset()


RECIPE = """\
name: third
output: {out}/runs
reports: {out}/reports
task:
  name: classification
  dataset: toy_topics
  dataset_options: {{train_size: 64, eval_size: 16}}
models:
  bag: {{dim: 8, epochs: 2, lr: 5.0e-2}}
train: {{batch_size: 16, progress: false}}
seeds: [1]
"""


def test_third_party_model_is_listed_and_runs_in_a_recipe(site, tmp_path):
    install(site, tmp_path, "nlpkit-bag", {"nlpkit_bag": MODEL.format(name="bag")}, {"bag": "nlpkit_bag"})
    reg = registry()
    assert reg.model("bag").__module__ == "nlpkit_bag"
    assert reg.sources[("models", "bag")] == "nlpkit-bag 0.3.0"

    listing = CliRunner().invoke(main, ["plugins"])
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.output.splitlines() if line.strip().startswith("bag "))
    assert "nlpkit-bag 0.3.0" in row and "classification" in row
    matrix = listing.output.split("Model x task")[1]
    assert any(line.split()[:2] == ["bag", "yes"] for line in matrix.splitlines() if line.strip())

    options = CliRunner().invoke(main, ["plugins", "--options", "bag"])
    assert options.exit_code == 0 and "nlpkit-bag 0.3.0" in options.output
    assert any(line.split() == ["dim", "int", "16"] for line in options.output.splitlines())

    recipe = tmp_path / "third.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    run = CliRunner().invoke(main, ["run", str(recipe)], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    results = json.loads((tmp_path / "runs/third/classification-bag-seed1/results.json").read_text())
    assert results["plugin"] == "bag" and 0.0 <= results["test"]["accuracy"] <= 1.0 and results["steps"] == 8


def test_plugin_options_are_validated_like_core_keys(site, tmp_path):
    install(site, tmp_path, "nlpkit-bag", {"nlpkit_bag": MODEL.format(name="bag")}, {"bag": "nlpkit_bag"})
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path).replace("{dim: 8,", "{dimm: 8,")
                      .replace("{train_size: 64", "{train_sise: 64"))
    with pytest.raises(NlpkitError) as err:
        load_recipe(recipe)
    msg = str(err.value)
    assert f"{recipe}, line 9: unknown key 'models.bag.dimm' for model 'bag'. Did you mean 'dim'?" in msg
    assert f"{recipe}, line 7" in msg and "'task.dataset_options.train_sise'" in msg
    assert "Did you mean 'train_size'?" in msg
    with_option = RECIPE.format(out=tmp_path).replace("dataset: toy_topics", "dataset: toy_topics\n  options: {x: 1}")
    recipe.write_text(with_option)
    with pytest.raises(NlpkitError, match=r"bad.yaml, line 7: unknown key 'task.options.x'"):
        load_recipe(recipe)
    recipe.write_text(RECIPE.format(out=tmp_path).replace("{dim: 8,", "{dim: many,"))
    with pytest.raises(NlpkitError, match=r"line 9: .models.bag.dim.: Input should be a valid integer"):
        load_recipe(recipe)


def test_unserved_task_is_refused_with_the_plugins_reason(site, tmp_path):
    install(site, tmp_path, "nlpkit-bag", {"nlpkit_bag": MODEL.format(name="bag")}, {"bag": "nlpkit_bag"})
    if "ner" not in registry().tasks:
        pytest.skip("no tagging task installed")
    recipe = tmp_path / "ner.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path).replace("name: classification\n  dataset: toy_topics\n  "
                                                          "dataset_options: {train_size: 64, eval_size: 16}",
                                                          "name: ner\n  dataset: conll2003"))
    with pytest.raises(NlpkitError, match="model 'bag' cannot serve task 'ner' .tagging.: a bag of words has no"):
        load_recipe(recipe)


def test_plugin_that_fails_to_import_is_skipped_and_named(site, tmp_path, monkeypatch, capsys):
    install(site, tmp_path, "nlpkit-broken", {"nlpkit_broken": "raise ImportError('needs libfoo')\n"},
            {"broken": "nlpkit_broken"})
    reg = load_registry()
    assert "lstm" in reg.models  # the others still load
    assert reg.failed["broken"] == "ImportError: needs libfoo"
    assert "skipping plugin 'broken' (nlpkit-broken 0.3.0): ImportError: needs libfoo" in capsys.readouterr().err
    listing = CliRunner().invoke(main, ["plugins"])
    assert "Failed to load plugin 'broken': ImportError: needs libfoo" in listing.output
    with pytest.raises(NlpkitError, match=r"Can't find 'brokn' in models\..*failed to load.*"
                                          r"'broken' \(ImportError: needs libfoo\)"):
        reg.model("brokn")  # the model a recipe names may be the broken plugin's: the miss says it failed
    monkeypatch.setenv("NLPKIT_STRICT_PLUGINS", "1")
    with pytest.raises(NlpkitError, match=r"Plugin 'broken' \(nlpkit-broken 0.3.0\) failed to load"):
        load_registry()


def test_allow_list_loads_only_the_named_entry_points(site, tmp_path, monkeypatch):
    install(site, tmp_path, "nlpkit-bag", {"nlpkit_bag": MODEL.format(name="bag")}, {"bag": "nlpkit_bag"})
    monkeypatch.setenv("NLPKIT_PLUGINS", "bag, classification")
    reg = load_registry()
    assert list(reg.models) == ["bag"] and list(reg.tasks) == ["classification"] and not reg.datasets


def test_misspelt_hook_is_caught_and_named(site, tmp_path, capsys):
    source = "import nlpkit\n\n@nlpkit.hookimpl\ndef register_model(register):\n    pass\n"
    install(site, tmp_path, "nlpkit-typo", {"nlpkit_typo": source}, {"typo": "nlpkit_typo"})
    reg = load_registry()
    assert "typo" in reg.failed and "register_model" in reg.failed["typo"]
    assert "skipping plugin 'typo'" in capsys.readouterr().err


def _clash_answers(reg, kind: str, name: str, *sources: str) -> str:
    """The clashing name fails only when asked for, naming every source; returns the message."""
    with pytest.raises(NlpkitError) as err:
        reg.get(kind, name)
    msg = str(err.value)
    assert f"Two plugins register the {kind[:-1]} '{name}'" in msg and all(s in msg for s in sources), msg
    return msg


def test_two_plugins_with_one_name_clash_only_where_named(site, tmp_path):
    install(site, tmp_path, "nlpkit-bag", {"nlpkit_bag": MODEL.format(name="bag")}, {"bag": "nlpkit_bag"})
    install(site, tmp_path, "other-bag", {"other_bag": MODEL.format(name="bag")}, {"other_bag": "other_bag"})
    reg = load_registry()  # does not stop: everything else stays usable
    assert reg.model("lstm") and reg.task("classification")
    _clash_answers(reg, "models", "bag", "nlpkit-bag 0.3.0", "other-bag 0.3.0")
    listing = CliRunner().invoke(main, ["plugins"])
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.output.splitlines() if line.strip().startswith("bag "))
    assert "nlpkit-bag 0.3.0" in row and "other-bag 0.3.0" in row
    assert "Clash: the model 'bag' is registered by" in listing.output
    as_json = json.loads(CliRunner().invoke(main, ["plugins", "--json"]).output)
    assert sorted(as_json["clashes"]["model bag"]) == ["nlpkit-bag 0.3.0", "other-bag 0.3.0"]
    recipe = tmp_path / "third.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    with pytest.raises(NlpkitError, match=r"third.yaml, line 9: Two plugins register the model 'bag'"):
        load_recipe(recipe)
    load_recipe(recipe, ["models={lstm: {}}"])  # a recipe not naming it is fine


def test_shadowing_a_builtin_name_clashes_too(site, tmp_path):
    install(site, tmp_path, "nlpkit-mylstm", {"nlpkit_mylstm": MODEL.format(name="lstm")}, {"mylstm": "nlpkit_mylstm"})
    reg = load_registry()
    _clash_answers(reg, "models", "lstm", "nlpkit-mylstm 0.3.0", "nlpkit 0.1.0")
    assert reg.model("bert")


@pytest.mark.parametrize("where", ["import", "hook"])
@pytest.mark.parametrize("how", ["raise SystemExit(3)", "import sys; sys.exit()", "raise RuntimeError('boom')",
                                 "register(int)"])
def test_a_plugin_that_exits_or_raises_is_skipped_like_any_broken_plugin(site, tmp_path, capsys, where, how):
    if where == "import":
        if how.startswith("register"):
            return  # only meaningful inside the hook
        source = f"{how}\n"
    else:  # a hook that registers one model, then fails: nothing of it may stay
        source = MODEL.format(name="half") + "\n\n@nlpkit.hookimpl\ndef register_tasks(register):\n    " + how + "\n"
    install(site, tmp_path, "nlpkit-bad", {"nlpkit_bad": source}, {"bad": "nlpkit_bad"})
    reg = load_registry()
    assert "bad" in reg.failed and "half" not in reg.models and "lstm" in reg.models
    assert "skipping plugin 'bad'" in capsys.readouterr().err
    listing = CliRunner().invoke(main, ["plugins"])
    assert listing.exit_code == 0 and "Failed to load plugin 'bad'" in listing.output and "lstm" in listing.output


METRIC = '''
import nlpkit


def share_of_zero(examples, predictions):
    return sum(p["prediction"] == 0 for p in predictions) / max(len(predictions), 1)


@nlpkit.hookimpl
def register_metrics(register):
    register("share_of_zero", share_of_zero)
'''


def test_metrics_are_registered_and_duplicates_named(site, tmp_path):
    install(site, tmp_path, "nlpkit-m1", {"nlpkit_m1": METRIC}, {"m1": "nlpkit_m1"})
    reg = registry()
    assert reg.metric("share_of_zero")([{}, {}], [{"prediction": 0}, {"prediction": 2}]) == 0.5
    assert reg.sources[("metrics", "share_of_zero")] == "nlpkit-m1 0.3.0"
    assert "share_of_zero" in CliRunner().invoke(main, ["plugins"]).output
    with pytest.raises(NlpkitError, match="Did you mean 'share_of_zero'"):
        reg.metric("share_of_zeros")
    install(site, tmp_path, "nlpkit-m2", {"nlpkit_m2": METRIC}, {"m2": "nlpkit_m2"})
    _clash_answers(load_registry(), "metrics", "share_of_zero", "nlpkit-m1 0.3.0", "nlpkit-m2 0.3.0")


# ----------------------------------------------------------------------------------- the example package

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nlpkit-transformer"
EXAMPLE_RECIPE = """\
name: transformer-kinds
output: {out}/runs
reports: {out}/reports
tasks:
  - {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 64, eval_size: 16}}}}
  - {{name: ner, dataset: conll_files, dataset_options: {{train: {out}/ner.txt, test: {out}/ner.txt,
      validation_size: 4}}}}
  - {{name: translation, dataset: parallel_files, dataset_options: {{train: {out}/pairs.tsv,
      test: {out}/pairs.tsv, validation_size: 4}}}}
models:
  transformer: {{d_model: 32, heads: 2, layers: 1, ff_dim: 64, lr: 1.0e-2, max_length: 32}}
train: {{epochs: 2, batch_size: 8, progress: false}}
seeds: [1]
"""


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("example-site")
    install_package(EXAMPLE, site)
    return site


def test_example_transformer_passes_its_conformance_kit(example_site, tmp_path):
    """Every check of the kit ran and passed for every task kind the plugin serves; the one skip is the check
    of refusing an unserved kind (it serves them all). Derived from the kit itself, so no count to keep."""
    from xml.etree import ElementTree

    from nlpkit.testing import ModelKit

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")])}
    report = tmp_path / "kit.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
                             f"--junitxml={report}", str(EXAMPLE / "tests")],
                            capture_output=True, text=True, env=env, cwd=example_site, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    cases = {case.get("name"): [child.tag for child in case] for case in ElementTree.parse(report).iter("testcase")}
    passed = {name for name, outcome in cases.items() if not outcome}
    assert {name: outcome for name, outcome in cases.items() if outcome} == {
        "test_refuses_unserved_kind[None]": ["skipped"]}
    checks = sorted(name for name in dir(ModelKit) if name.startswith("test_"))
    per_kind = [c for c in checks if c not in ("test_registered", "test_refuses_unserved_kind")]
    expected = {"test_registered"} | {f"{c}[{k}]" for c in per_kind for k in ("classification", "tagging", "seq2seq")}
    assert passed == expected, sorted(passed ^ expected)


def test_example_transformer_runs_classification_ner_and_translation(example_site, tmp_path):
    needed = {"ner", "translation"}
    with plugins_on_path(example_site):
        if not needed <= set(registry().tasks):
            pytest.skip(f"tasks {needed - set(registry().tasks)} not installed")
        (tmp_path / "ner.txt").write_text("".join(
            f"Ann B-PER\nmet O\nBob{i % 3} B-PER\nin O\nParis B-LOC\n.\tO\n\n" for i in range(16)))
        (tmp_path / "pairs.tsv").write_text("".join(
            f"a {c} dog runs\tein {c} hund rennt\n" for c in ("big", "small", "red", "blue") * 4))
        recipe = tmp_path / "kinds.yaml"
        recipe.write_text(EXAMPLE_RECIPE.format(out=tmp_path))
        run = CliRunner().invoke(main, ["run", str(recipe)], catch_exceptions=False)
        assert run.exit_code == 0, run.output
        for task, metric in (("classification", "accuracy"), ("ner", "f1"), ("translation", "bleu")):
            res = json.loads((tmp_path / f"runs/transformer-kinds/{task}-transformer-seed1/results.json").read_text())
            assert res["plugin"] == "transformer" and res["task"] == task and metric in res["test"], res["test"]
            assert res["steps"] > 0 and res["parameters"] > 0


def test_example_recipes_are_valid(example_site, monkeypatch, tmp_path):
    monkeypatch.setenv("NLPKIT_DATA", str(tmp_path))
    with plugins_on_path(example_site):
        assert len(load_recipe(EXAMPLE / "recipe.yaml").runs) == 2
        tasks = {"ner", "translation"} & set(registry().tasks)
        if len(tasks) == 2:
            assert len(load_recipe(EXAMPLE / "recipe-all-kinds.yaml").runs) == 6
