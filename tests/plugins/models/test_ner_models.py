"""NER models: BERT sub-token alignment and windowing, and every tagger end to end through the CLI."""

import json
import random
import textwrap

import pytest
import torch
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.contract import TaskSpec

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer: the real code path, in seconds."""
    from nlpkit_plugins.models.bert.pretrained import resolve_pretrained
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_pretrained("minilm")).save_pretrained(folder)
    return str(folder)


def bert_tagger(folder, max_length=32, stride=8):
    from nlpkit_plugins.models.bert import BertModel

    options = BertModel.Options(pretrained=folder, max_length=max_length, stride=stride)
    return BertModel.create(TaskSpec(kind="tagging", labels=LABELS), options, [])


def test_first_sub_token_carries_the_label(tiny_bert_folder):
    model = bert_tagger(tiny_bert_folder, max_length=64)
    words = ["Pneumonoultramicroscopicsilicovolcanoconiosis", "in", "Llanfairpwllgwyngyll", "."]
    f = model.encode({"tokens": words, "tags": [1, 0, 3, 0]})
    pieces = model.pieces(words)
    assert len(pieces[0]) > 5 and len(pieces[2]) > 3  # the words really split into many pieces
    (row,) = f["labels"]
    firsts = [1 + sum(len(p) for p in pieces[:i]) for i in range(len(words))]  # +1: [CLS]
    assert [i for i, lab in enumerate(row) if lab != -100] == firsts
    assert [row[i] for i in firsts] == [1, 0, 3, 0]
    assert f["owned"] == [firsts]


def test_long_sentence_is_windowed_and_every_word_predicted_once(tiny_bert_folder):
    model = bert_tagger(tiny_bert_folder, max_length=32, stride=8)
    rng = random.Random(0)
    words = [rng.choice(["Paris", "met", "Angela", "unbelievably", "x", "1996-08-22", "."]) for _ in range(600)]
    f = model.encode({"tokens": words, "tags": [rng.randrange(5) for _ in words]})
    assert len(f["windows"]) > 20 and all(len(w) <= 32 for w in f["windows"])
    assert sum(len(o) for o in f["owned"]) == 600  # each word owned by exactly one window
    assert sum(lab != -100 for row in f["labels"] for lab in row) == 600
    short = model.encode({"tokens": ["Angela", "met", "x"]})
    model.eval()
    batch = model.collate([f, short])
    out = model.predict(batch)
    assert [len(p["prediction"]) for p in out] == [600, 3]
    loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
    assert torch.isfinite(loss)


def test_uncased_tokenizer_gets_word_shapes_back(tiny_bert_folder):
    from nlpkit_plugins.models.bert.tagger import word_shape

    assert [word_shape(w) for w in ["the", "Paris", "A", "EU", "U.S.", "McDonald", "1996", "--"]] == [1, 2, 2, 3, 3, 4,
                                                                                                    5, 6]
    model = bert_tagger(tiny_bert_folder, max_length=64)
    assert model.tokenizer.do_lower_case and model.shapes is not None  # MiniLM lowercases: the shapes are on
    lower, title = (model.encode({"tokens": [w, "met", "x"]}) for w in ("paris", "Paris"))
    assert lower["windows"] == title["windows"]  # the tokenizer alone cannot tell them apart
    assert lower["shapes"] != title["shapes"]
    model.eval()
    assert all(len(model.predict(model.collate([f]))[0]["prediction"]) == 3 for f in (lower, title))
    logits = [model(**model.collate([f])).logits for f in (lower, title)]
    assert not torch.allclose(logits[0], logits[1])  # ... and the head sees the difference


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
