"""``bert`` for tagging (bert/tagger.py): sub-token alignment, windows over long sentences, word shapes."""

import random

import torch

from nlpkit.contract import TaskSpec

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


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
