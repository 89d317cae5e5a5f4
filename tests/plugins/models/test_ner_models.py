"""NER models: every tagger end to end through the CLI (the BERT tagger's alignment and windows: bert/test_tagger.py)."""

import json
import random
import textwrap

import pytest
from click.testing import CliRunner

from nlpkit.cli import main

NAMES = ["Angela Merkel", "Emmanuel Macron", "Boris Johnson", "Peter Blackburn", "Maria Lopez", "John Smith"]
CITIES = ["Paris", "Berlin", "London", "Madrid", "Rome", "Vienna"]
VERBS = ["met", "called", "visited", "thanked"]


def sentence(rng):
    a, b = rng.sample(NAMES, 2)
    words = [*a.split(), rng.choice(VERBS), *b.split(), "in", rng.choice(CITIES), "."]
    tags = ["I-PER", "I-PER", "O", "I-PER", "I-PER", "O", "I-LOC", "O"]  # IOB1, as CoNLL-2003 has it
    return "\n".join(f"{w} NNP I-NP {t}" for w, t in zip(words, tags)) + "\n"


def write_split(path, n, seed):
    rng = random.Random(seed)
    path.write_text("-DOCSTART- -X- -X- O\n\n" + "\n".join(sentence(rng) for _ in range(n)))


@pytest.fixture(scope="module")
def ner_runs(tmp_path_factory, tiny_bert_folder):
    """One tiny recipe with every model serving ner, run through the CLI."""
    tmp = tmp_path_factory.mktemp("ner-e2e")
    data = tmp / "data"
    data.mkdir()
    for name, n, seed in (("train.txt", 48, 0), ("dev.txt", 8, 1), ("test.txt", 8, 2)):
        write_split(data / name, n, seed)
    recipe = tmp / "tiny_ner.yaml"
    tiny = "embedding_dim: 16, hidden_size: 24, char_dim: 8, char_filters: 16, dropout: 0.0"
    recipe.write_text(textwrap.dedent(f"""\
        name: tiny_ner
        output: {tmp / 'runs'}
        reports: {tmp / 'reports'}
        task:
          name: ner
          dataset: conll_files
          data_dir: {data}
          dataset_options: {{train: train.txt, validation: dev.txt, test: test.txt, tag_column: 3}}
        models:
          lstm: {{epochs: 12, lr: 2.0e-2, {tiny}}}
          attention: {{epochs: 12, lr: 2.0e-2, attention_size: 8, crf: false, {tiny}}}
          bert: {{epochs: 1, lr: 1.0e-3, pretrained: {tiny_bert_folder}, max_length: 16, stride: 4}}
        train: {{batch_size: 8, progress: false, log_every: 5}}
        seeds: [1]
        """))
    result = CliRunner().invoke(main, ["run", str(recipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "tiny_ner"


@pytest.mark.parametrize("model", ["lstm", "attention", "bert"])
def test_every_model_runs_end_to_end(ner_runs, model):
    folder = ner_runs / f"ner-{model}-seed1"
    results = json.loads((folder / "results.json").read_text())
    assert set(results["test"]) >= {"f1", "precision", "recall", "token_accuracy", "f1_PER", "f1_LOC"}
    assert set(results["test_details"]["per_type"]) == {"PER", "LOC"}
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"index", "tokens", "gold", "prediction"}
    assert all(len(r["tokens"]) == len(r["gold"]) == len(r["prediction"]) for r in rows)
    assert rows[0]["gold"][:2] == ["B-PER", "I-PER"]  # IOB1 read and normalised to IOB2
    if model != "bert":  # the recurrent taggers learn this toy language; a random tiny BERT in 1 epoch does not
        assert results["test"]["f1"] > 0.9


def test_predict_prints_entities(ner_runs):
    result = CliRunner().invoke(main, ["predict", str(ner_runs / "ner-lstm-seed1"),
                                       "Angela Merkel met Emmanuel Macron in Paris."])
    assert result.exit_code == 0, result.output
    assert "Angela Merkel (PER); Emmanuel Macron (PER); Paris (LOC)" in result.output
