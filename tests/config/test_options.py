"""Model options per task kind, checked when the recipe loads; `plugins --options`, `--dry-run` and `--threads`."""

import textwrap

import pytest
import torch
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.config.recipe import RunSpec, TaskEntry, load_recipe
from nlpkit.errors import NlpkitError
from nlpkit.plugins import registry
from nlpkit.train.options import TrainOptions


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


CLASSIFY = """\
task: {name: classification, dataset: toy_topics}
models:
  %s
"""


@pytest.mark.parametrize("entry, key, hint", [
    ("lstm: {beam_size: 3}", "models.lstm.beam_size", "applies to seq2seq tasks only (this is a classification"),
    ("attention: {crf: false}", "models.attention.crf", "applies to tagging tasks only"),
    ("bert: {stride: 16}", "models.bert.stride", "applies to tagging tasks only"),
    ("bert: {encoder_lr: 1.0e-4}", "models.bert.encoder_lr", "applies to seq2seq tasks only"),
    ("lstm: {tokenizr: word}", "models.lstm.tokenizr", "Did you mean 'tokenizer'?"),
])
def test_option_of_another_task_kind_is_refused_at_load(tmp_path, entry, key, hint):
    with pytest.raises(NlpkitError) as err:
        load_recipe(write(tmp_path, CLASSIFY % entry))
    msg = str(err.value)
    assert f"line 3: unknown key '{key}' for model" in msg and hint in msg


def test_word_tokenizer_refused_for_translation_but_not_classification(tmp_path):
    translate = "task: {name: translation, dataset: multi30k}\nmodels:\n  lstm: {tokenizer: word}\n"
    with pytest.raises(NlpkitError, match=r"'models.lstm.tokenizer': Input should be 'bpe', 'wordpiece' or 'unigram'"):
        load_recipe(write(tmp_path, translate))
    assert load_recipe(write(tmp_path, CLASSIFY % "lstm: {tokenizer: word}")).runs[0].model_options == {
        "tokenizer": "word"}


def test_multi_kind_recipe_gives_each_run_only_its_kind_options(tmp_path):
    recipe = load_recipe(write(tmp_path, """\
        tasks:
          - {name: classification, dataset: toy_topics}
          - {name: ner, dataset: conll2003}
        models:
          lstm: {crf: false, vocab_size: 500, hidden_size: 32}
        """))
    options = {r.task.name: r.model_options for r in recipe.runs}
    assert options == {"classification": {"vocab_size": 500, "hidden_size": 32},
                       "ner": {"crf": False, "hidden_size": 32}}


def test_option_for_no_kind_of_the_recipe_is_refused(tmp_path):
    recipe = """\
        tasks:
          - {name: classification, dataset: toy_topics}
          - {name: ner, dataset: conll2003}
        models:
          lstm: {beam_size: 2}
        """
    with pytest.raises(NlpkitError, match="applies to seq2seq tasks only"):
        load_recipe(write(tmp_path, recipe))


def test_every_builtin_option_is_described_and_every_kind_class_fits_the_full_class():
    """The per-kind classes are what recipes may set; ``Options`` (what create/load receive) must accept them."""
    reg = registry()
    for name in ("lstm", "attention", "bert"):
        cls = reg.model(name)
        for kind in cls.serves:
            per_kind = cls.options_for(kind)
            assert per_kind is not cls.Options
            for field, info in per_kind.model_fields.items():
                assert info.description, f"{name}.{kind}.{field} has no description"
                assert field in cls.Options.model_fields
            cls.Options(**per_kind().model_dump())  # defaults of a kind are valid in the full class


def test_plugins_options_prints_types_defaults_allowed_values_per_kind():
    out = CliRunner().invoke(main, ["plugins", "--options", "lstm"])
    assert out.exit_code == 0, out.output
    sections = out.output.split(" for ")
    classification = next(s for s in sections if s.startswith("classification tasks"))
    seq2seq = next(s for s in sections if s.startswith("seq2seq tasks"))
    assert "beam_size" not in classification and "crf" not in classification
    assert "[word, wordpiece, bpe, unigram]" in classification
    line = next(x for x in seq2seq.splitlines() if x.split()[:1] == ["beam_size"])
    assert line.split()[1:3] == ["int", "5"]
    assert "[>= 1]" in line and "Beam width" in line


@pytest.mark.parametrize("name, expected", [("train", "precision"), ("task", "dataset_options")])
def test_plugins_options_train_and_task(name, expected):
    out = CliRunner().invoke(main, ["plugins", "--options", name])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.split()[:1] == [expected])
    if name == "train":
        assert "[auto, fp32, bf16, fp16]" in line
    else:
        assert "dataset plugin's options" in line


def test_dry_run_shows_every_resolved_value(tmp_path):
    recipe = write(tmp_path, CLASSIFY % "lstm: {vocab_size: 500}")
    out = CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--threads", "1"])
    assert out.exit_code == 0, out.output
    assert '"embedding_dim": 128' in out.output and '"vocab_size": 500' in out.output  # a default and a set value
    assert '"weight_decay": 0.01' in out.output and '"threads": 1' in out.output  # --threads sets train.threads
    assert '"train_size": 800' in out.output  # the dataset's resolved options


def test_run_sets_and_restores_threads(monkeypatch):
    """train.threads is applied at the start of a run; a run without it gets the process's count back."""
    from nlpkit.run import engine

    before = torch.get_num_threads()
    seen = []

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Stop

    monkeypatch.setattr(engine, "load_splits", stop)
    entry = TaskEntry(name="classification", dataset="toy_topics")
    for threads in (1, None):
        spec = RunSpec("t", entry, "lstm", "lstm", {}, TrainOptions(threads=threads), 1)
        with pytest.raises(Stop):
            engine.execute(spec, cache={})
    assert seen == [1, before]


def test_a_subclass_with_its_own_options_is_checked_against_them():
    """A plugin subclassing a built-in model with a wider Options class must not be checked against the
    parent's per-kind tables (its own keys would be rejected); one that declares a table of its own gets it."""
    from nlpkit_plugins.models.lstm import LSTMModel
    from nlpkit_plugins.models.shared.options import RecurrentOptions

    class Wider(RecurrentOptions):
        extra: int = 1

    class Mine(LSTMModel):
        Options = Wider

    class Tabled(Mine):
        kind_options = {"classification": RecurrentOptions}

    assert Mine.options_for("classification") is Wider
    assert "extra" not in Tabled.options_for("classification").model_fields
    assert "beam_size" not in LSTMModel.options_for("classification").model_fields
