"""Models saved before the built-in plugins were split into one folder per model (issue #16) still load and
predict the same, and today's models have the same weights (names, shapes, order) and files as then.

``data/saved_before_16`` was written by ``saved_models.py`` run on the plugins of commit 892b56d (a saved folder
names its plugin, never a module path, so it is the weights and files that must stay as they were)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from saved_models import KINDS, create, files, predictions, tiny_bert, weights

from nlpkit.plugins import registry

DATA = Path(__file__).parent / "data" / "saved_before_16"
EXPECTED = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(EXPECTED["predictions"]))
def test_a_model_saved_before_loads_predicts_the_same_and_saves_the_same_files(name, tmp_path):
    folder = DATA / name
    config = json.loads((folder / "config.json").read_text())
    model = registry().model(config["plugin"]).load(folder)
    inputs = EXPECTED["examples"][model.spec.kind]["inputs"]
    assert predictions(model, inputs) == EXPECTED["predictions"][name]
    model.save(tmp_path / name)
    assert files(tmp_path / name) == files(folder)
    for path in files(folder):
        if path.endswith(".safetensors"):
            old, new = load_file(folder / path), load_file(tmp_path / name / path)
            assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old), path
        else:
            assert json.loads((tmp_path / name / path).read_text()) == json.loads((folder / path).read_text()), path


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.mark.parametrize("plugin", ["lstm", "attention", "bert"])
@pytest.mark.parametrize("kind", KINDS)
def test_weights_and_files_are_those_of_before(plugin, kind, bert_folder, tmp_path):
    model = create(plugin, kind, EXPECTED["examples"], bert_folder)
    assert weights(model) == EXPECTED["weights"][f"{plugin}-{kind}"]
    model.save(tmp_path / "saved")
    assert files(tmp_path / "saved") == EXPECTED["files"][f"{plugin}-{kind}"]
    again = registry().model(plugin).load(tmp_path / "saved")
    assert type(again) is type(model) and weights(again) == weights(model)
