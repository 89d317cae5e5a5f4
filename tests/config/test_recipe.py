"""Recipe validation: every error names the file, the line and the closest valid key."""

import textwrap

import pytest

from nlpkit import Model
from nlpkit.config.recipe import load_recipe, parse_recipe, settings_hash
from nlpkit.errors import NlpkitError
from nlpkit.plugins import Registry, registry

GOOD = """\
name: demo
task:
  name: classification
  dataset: toy_topics
models:
  lstm: {epochs: 2, lr: 3.0e-3}
  bert: {lr: 2e-5, batch_size: 8}
train:
  batch_size: 16
seeds: [1, 2]
"""


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_recipe_expands_to_models_x_seeds(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert [r.name for r in recipe.runs] == [
        "classification-lstm-seed1", "classification-lstm-seed2",
        "classification-bert-seed1", "classification-bert-seed2",
    ]
    lstm, bert = recipe.runs[0], recipe.runs[2]
    assert lstm.train.epochs == 2 and lstm.train.batch_size == 16 and lstm.train.lr == 3e-3
    assert bert.train.lr == 2e-5 and bert.train.batch_size == 8  # "2e-5" (a YAML string) is coerced
    assert recipe.runs[0].folder.as_posix() == "runs/demo/classification-lstm-seed1"


def test_model_entry_with_its_own_seeds_and_plugin(tmp_path):
    entries = "bert: {lr: 2e-5, seeds: [5]}\n  small: {model: lstm, hidden_size: 8}"
    text = GOOD.replace("bert: {lr: 2e-5, batch_size: 8}", entries)
    recipe = load_recipe(write(tmp_path, text))
    assert [(r.label, r.model, r.seed) for r in recipe.runs] == [
        ("lstm", "lstm", 1), ("lstm", "lstm", 2), ("bert", "bert", 5), ("small", "lstm", 1), ("small", "lstm", 2)]
    with pytest.raises(NlpkitError, match="'models.bert.seeds' must be a list of integers"):
        load_recipe(write(tmp_path, GOOD.replace("batch_size: 8}", "seeds: 3}")))


def test_unknown_top_level_key_names_line_and_suggestion(tmp_path):
    path = write(tmp_path, GOOD.replace("seeds: [1, 2]", "seeds: [1]\nsedes: [3]"))
    with pytest.raises(NlpkitError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert f"{path}, line 11" in msg and "'sedes'" in msg and "Did you mean 'seeds'?" in msg


def test_unknown_train_key(tmp_path):
    path = write(tmp_path, GOOD.replace("batch_size: 16", "batch_sise: 16"))
    with pytest.raises(NlpkitError, match=r"line 9: unknown key 'train.batch_sise'. Did you mean 'batch_size'"):
        load_recipe(path)


def test_unknown_model_option_suggests_model_or_train_key(tmp_path):
    path = write(tmp_path, GOOD.replace("lstm: {epochs: 2, lr: 3.0e-3}", "lstm: {epochs: 2, hiden_size: 64}"))
    with pytest.raises(NlpkitError, match=r"line 6: unknown key 'models.lstm.hiden_size' .*Did you mean 'hidden_size'"):
        load_recipe(path)


def test_wrong_type(tmp_path):
    path = write(tmp_path, GOOD.replace("batch_size: 16", "batch_size: lots"))
    with pytest.raises(NlpkitError, match=r"line 9: 'train.batch_size': Input should be a valid integer"):
        load_recipe(path)


def test_unknown_plugin_names_available_and_closest(tmp_path):
    path = write(tmp_path, GOOD.replace("lstm: {", "lstn: {"))
    with pytest.raises(NlpkitError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "line 6" in msg and "Can't find 'lstn' in models" in msg and "Did you mean 'lstm'?" in msg
    assert "bert" in msg and "attention" in msg


def test_unknown_dataset(tmp_path):
    with pytest.raises(NlpkitError, match=r"Can't find 'toy_topic' in datasets.*Did you mean 'toy_topics'"):
        load_recipe(write(tmp_path, GOOD.replace("dataset: toy_topics", "dataset: toy_topic")))


def test_overrides_are_validated_and_applied(tmp_path):
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["train.batch_size=64", "models.bert.lr=3e-5", "seeds=[7]"])
    assert [r.seed for r in recipe.runs] == [7, 7]
    lstm, bert = recipe.runs
    assert lstm.train.batch_size == 64 and lstm.train.lr == 3e-3  # shared key applies; the model's own wins
    assert bert.train.batch_size == 8 and bert.train.lr == 3e-5
    with pytest.raises(NlpkitError, match=r"--set train.lrr=1: unknown key 'train.lrr'. Did you mean 'lr'"):
        load_recipe(path, ["train.lrr=1"])
    with pytest.raises(NlpkitError, match="expected key.path=value"):
        load_recipe(path, ["train.lr"])


def test_incompatible_pair_refused_before_training(tmp_path):
    class OnlySeq2Seq(Model):
        name = "s2s"
        serves = ("seq2seq",)
        why_not = {"classification": "it only decodes sequences"}

    reg = registry()
    fake = Registry(models={**reg.models, "s2s": OnlySeq2Seq}, tasks=reg.tasks, datasets=reg.datasets)
    text = GOOD.replace("lstm: {epochs: 2, lr: 3.0e-3}", "s2s: {}")
    with pytest.raises(NlpkitError, match=r"line 6: model 's2s' cannot serve task 'classification'.*only decodes"):
        parse_recipe(text, tmp_path / "r.yaml", registry=fake)


def test_model_train_defaults_apply_where_the_recipe_sets_nothing(tmp_path):
    """bert fine-tunes at 2e-5 and lstm learns at 3e-3 with no lr in the recipe; a train: block or a model entry
    wins over a model's default; a default for another task kind does not apply."""
    bare = GOOD.replace("lstm: {epochs: 2, lr: 3.0e-3}", "lstm: {epochs: 2}").replace("{lr: 2e-5, batch_size: 8}",
                                                                                       "{batch_size: 8}")
    lstm, bert = (load_recipe(write(tmp_path, bare)).runs[i] for i in (0, 2))
    assert (lstm.train.lr, bert.train.lr) == (3e-3, 2e-5)
    shared = load_recipe(write(tmp_path, bare.replace("batch_size: 16", "batch_size: 16\n  lr: 1.0e-4"))).runs
    assert {r.train.lr for r in shared} == {1e-4}
    entry = load_recipe(write(tmp_path, bare.replace("{batch_size: 8}", "{batch_size: 8, lr: 5.0e-5}"))).runs
    assert (entry[0].train.lr, entry[2].train.lr) == (3e-3, 5e-5)

    class Picky(Model):
        name = "picky"
        serves = ("classification",)
        train_defaults = {"*": {"batch_size": 4}, "seq2seq": {"lr": 0.5}, "classification": {"warmup": 0.2}}

    reg = registry()
    fake = Registry(models={**reg.models, "picky": Picky}, tasks=reg.tasks, datasets=reg.datasets)
    run = parse_recipe(GOOD.replace("lstm: {epochs: 2, lr: 3.0e-3}", "picky: {}").replace("batch_size: 16", "log_every: 5"),
                       tmp_path / "r.yaml", registry=fake).runs[0]
    assert (run.train.batch_size, run.train.warmup, run.train.lr) == (4, 0.2, 1e-3)
    Picky.train_defaults = {"*": {"learning_rate": 0.1}}
    with pytest.raises(NlpkitError, match="line 6: model plugin 'picky' declares train_defaults that are not train "
                                          "options: learning_rate"):
        parse_recipe(GOOD.replace("lstm: {epochs: 2, lr: 3.0e-3}", "picky: {}"), tmp_path / "r.yaml", registry=fake)


def test_a_models_default_length_applies_only_where_the_recipe_sets_none(tmp_path):
    """lstm and bert bring a budget in steps (min_steps, ended by early stopping) for small data; a recipe that
    says how long to train (epochs, max_steps or min_steps, in train: or the entry) is taken at its word, and
    its runs keep the settings hash they had before min_steps existed."""
    bare = GOOD.replace("lstm: {epochs: 2, lr: 3.0e-3}", "lstm: {}").replace("{lr: 2e-5, batch_size: 8}", "{}")
    lstm, bert = (load_recipe(write(tmp_path, bare)).runs[i] for i in (0, 2))
    assert (lstm.train.min_steps, lstm.train.early_stopping, lstm.train.epochs) == (1500, 3, 3.0)
    assert (bert.train.min_steps, bert.train.early_stopping) == (500, 3)
    for said in ("epochs: 2", "max_steps: 40", "min_steps: 40"):
        runs = load_recipe(write(tmp_path, bare.replace("batch_size: 16", f"batch_size: 16\n  {said}"))).runs
        assert {(r.train.min_steps, r.train.early_stopping) for r in runs} == {
            (40 if said == "min_steps: 40" else None, None)}, said
    entry = load_recipe(write(tmp_path, bare.replace("lstm: {}", "lstm: {epochs: 2}"))).runs
    assert (entry[0].train.min_steps, entry[2].train.min_steps) == (None, 500)  # bert's entry set no length
    spec = load_recipe(write(tmp_path, GOOD)).runs[0]
    assert spec.train.min_steps is None
    assert spec.settings_hash == settings_hash({k: v if k != "train" else
                                                {x: y for x, y in v.items() if x != "min_steps"}
                                                for k, v in spec.to_dict().items()})


def test_two_entries_of_one_task_need_ids_of_their_own(tmp_path):
    """Two data sets under one task name gave the same run names: the second entry's runs were skipped as
    finished, silently. Said before anything trains; with an ``id`` each, both run, each under its own name, and
    an entry without one keeps the settings hash it had before ids existed."""
    entries = ("tasks:\n  - {name: classification, dataset: toy_topics}\n"
               "  - {name: classification, dataset: toy_topics, dataset_options: {train_size: 40}}\n")
    text = GOOD.replace("task:\n  name: classification\n  dataset: toy_topics\n", entries)
    with pytest.raises(NlpkitError, match=r"two task entries are both called 'classification' \(task "
                                          r"'classification' on 'toy_topics' and on 'toy_topics'\).*give each entry "
                                          r"an id of its own"):
        load_recipe(write(tmp_path, text))
    before = load_recipe(write(tmp_path, GOOD)).runs[0]
    runs = load_recipe(write(tmp_path, text.replace("  - {name: classification, dataset: toy_topics, dataset_",
                                                    "  - {name: classification, id: small, dataset: toy_topics, "
                                                    "dataset_"))).runs
    assert [r.name for r in runs if r.seed == 1 and r.label == "lstm"] == ["classification-lstm-seed1",
                                                                           "small-lstm-seed1"]
    old = runs[0].to_dict()
    old["task"] = {k: v for k, v in old["task"].items() if k != "id"}  # a run made before entries had ids
    assert runs[0].settings_hash == before.settings_hash == settings_hash(old)
    small = next(r for r in runs if r.task.id == "small")
    assert small.to_dict()["task"]["id"] == "small" and small.folder.name == small.name
    assert small.settings_hash != settings_hash({**small.to_dict(), "task": {**small.to_dict()["task"], "id": None}})


def test_not_yaml_and_no_models(tmp_path):
    with pytest.raises(NlpkitError, match="not valid YAML"):
        load_recipe(write(tmp_path, "models: [unclosed"))
    with pytest.raises(NlpkitError, match="names no task"):
        load_recipe(write(tmp_path, "models: {lstm: {}}"))
