"""The ``sweep:`` block is checked like the rest of a recipe (file, line, did-you-mean) before anything trains,
and it changes nothing about the recipe's own runs."""

import textwrap

import pytest

from nlpkit.config.recipe import load_recipe, parse_recipe
from nlpkit.errors import NlpkitError
from nlpkit.plugins import registry
from nlpkit.sweep.schema import load_sweep

HEAD = """\
name: s
task: {name: classification, dataset: toy_topics}
models:
  lstm: {hidden_size: 8}
  attention: {hidden_size: 8}
train: {epochs: 1}
seeds: [1, 2]
"""


def sweep_error(tmp_path, block: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "sweep:\n" + textwrap.indent(textwrap.dedent(block), "  "))
    with pytest.raises(NlpkitError) as err:
        load_sweep(load_recipe(path), registry())
    return str(err.value)


def test_an_unknown_parameter_path_names_its_line_and_the_closest_valid_one(tmp_path):
    text = sweep_error(tmp_path, """\
        metric: validation.accuracy
        parameters:
          models.lstm.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
          models.lstm.hiden_size: {type: categorical, choices: [8, 16]}
          models.lstmm.dropout: {type: float, low: 0.0, high: 0.5}
          train.batchsize: {type: int, low: 8, high: 32}
          optimizer.lr: {type: float, low: 0.1, high: 0.2}
        """)
    assert "s.yaml, line 12: unknown parameter 'sweep.parameters.models.lstm.hiden_size'. Did you mean " \
           "'models.lstm.hidden_size'?" in text
    assert "s.yaml, line 13: unknown parameter 'sweep.parameters.models.lstmm.dropout'. Did you mean " \
           "'models.lstm.dropout'?" in text
    assert "line 14" in text and "Did you mean 'train.batch_size'?" in text
    assert "line 15" in text and "models.<entry>.<option>, train.<key> or task.options.<key>" in text
    assert "line 11" not in text  # models.lstm.lr is fine


def test_a_test_metric_or_one_the_task_does_not_produce_is_not_an_objective(tmp_path):
    text = sweep_error(tmp_path, """\
        metric: test.accuracy
        parameters: {train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}}
        """)
    assert "s.yaml, line 9: 'sweep.metric': test.accuracy is a test metric" in text
    assert "use validation.accuracy" in text
    text = sweep_error(tmp_path, """\
        metric: validation.acuracy
        parameters: {train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}}
        """)
    assert "line 9: 'sweep.metric': task 'classification' does not produce 'acuracy'. Did you mean 'accuracy'?" in text
    assert "It produces: accuracy, macro_f1" in text
    text = sweep_error(tmp_path, """\
        metric: validation.macro_f1
        parameters: {train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}}
        """)
    assert "'sweep.direction': say maximize or minimize" in text


@pytest.mark.parametrize("param, says", [
    ("{type: float, low: 0.5, high: 0.1}", "low (0.5) must be below high (0.1)"),
    ("{type: float, low: 0.0, high: 0.1, log: true}", "log: true needs low > 0"),
    ("{type: categorical, choices: []}", "needs a non-empty 'choices' list"),
    ("{type: floaty, low: 0.1, high: 0.2}", "Input should be 'float', 'int' or 'categorical'"),
    ("{type: int, low: 1.5, high: 4}", "whole numbers"),
    ("{type: float, low: 0.1, high: 0.2, hi: 3}", "unknown key 'sweep.parameters.models.lstm.dropout.hi'"),
])
def test_a_bad_range_is_an_error_at_its_line(tmp_path, param, says):
    text = sweep_error(tmp_path, f"""\
        metric: validation.accuracy
        parameters:
          models.lstm.dropout: {param}
        """)
    assert "s.yaml, line 11" in text and says in text, text


def test_a_range_end_the_option_refuses_is_an_error_and_keys_are_checked_with_did_you_mean(tmp_path):
    text = sweep_error(tmp_path, """\
        metric: validation.accuracy
        trails: 3
        parameters:
          models.lstm.dropout: {type: float, low: 0.1, high: 1.5}
        """)
    assert "line 10: unknown key 'sweep.trails'. Did you mean 'trials'?" in text
    text = sweep_error(tmp_path, """\
        metric: validation.accuracy
        parameters:
          models.lstm.dropout: {type: float, low: 0.1, high: 1.5}
        """)
    assert "line 11: 'sweep.parameters.models.lstm.dropout': 1.5 is not a valid value there" in text


def test_the_sweep_block_leaves_the_recipes_own_runs_as_they_are(tmp_path):
    block = ("sweep:\n  metric: validation.accuracy\n  parameters:\n"
             "    models.lstm.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    plain, swept = parse_recipe(HEAD), parse_recipe(HEAD + block)
    assert [(r.folder, r.settings_hash, r.to_dict()) for r in plain.runs] == \
           [(r.folder, r.settings_hash, r.to_dict()) for r in swept.runs]
    sweep = load_sweep(swept, registry())
    assert [s.name for s in sweep.studies] == ["s.classification.lstm"]  # only the entry its parameters name
    assert sweep.direction == "maximize" and sweep.best_seeds == [1, 2]
    shared = parse_recipe(HEAD + "sweep:\n  metric: validation.accuracy\n  parameters:\n"
                                 "    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n")
    assert [s.key for s in load_sweep(shared, registry()).studies] == ["classification-lstm", "classification-attention"]
