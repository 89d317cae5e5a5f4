"""The conformance kit catches broken plugins, and says what is wrong: a model whose save/load loses weights,
one that ignores the seed, one whose loss does not fall, one that leaks padding, one that builds for a task
kind it does not serve; a task whose metric ignores the predictions; a dataset that crashes on a bad file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from nlpkit import Dataset, Model, Options, Output, TaskSpec, Unsupported
from nlpkit.testing import (
    build,
    check_bad_file,
    check_batch_of_one_and_longest_input,
    check_bf16,
    check_builds,
    check_forward_backward,
    check_overfits,
    check_padding_invariant,
    check_padding_logits,
    check_refuses,
    check_save_load,
    check_seeded,
    check_task,
    overfit,
    tiny_examples,
    tiny_records,
)


class BagOptions(Options):
    dim: int = 16
    buckets: int = 257


class Bag(Model):
    """A correct little model: hashed words, mean of embeddings (padding left out), linear layer."""

    name = "kit_bag"
    serves = ("classification",)
    Options = BagOptions

    def __init__(self, spec, options):
        super().__init__(spec, options)
        self.embed = nn.EmbeddingBag(options.buckets, options.dim, mode="mean", padding_idx=0)
        self.head = nn.Linear(options.dim, len(spec.labels))

    @classmethod
    def create(cls, spec, options, train):
        if spec.kind not in cls.serves:
            raise Unsupported(f"kit_bag serves classification only, not {spec.kind}")
        return cls(spec, options)

    def save(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        config = {"spec": self.spec.to_dict(), "options": self.options.model_dump()}
        (folder / "config.json").write_text(json.dumps(config))
        save_model(self, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder):
        config = json.loads((folder / "config.json").read_text())
        model = cls(TaskSpec(**config["spec"]), cls.Options(**config["options"]))
        load_model(model, str(folder / "model.safetensors"))
        return model

    def encode(self, example):
        ids = [1 + sum(map(ord, w)) % (self.options.buckets - 1) for w in example["text"].split()][:50] or [1]
        return {"ids": ids, "length": len(ids), "label": example.get("label", -1)}

    def collate(self, features):
        ids = torch.zeros(len(features), max(f["length"] for f in features), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : f["length"]] = torch.tensor(f["ids"])
        return {"ids": ids, "labels": torch.tensor([f["label"] for f in features])}

    def logits(self, ids):
        return self.head(self.embed(ids))

    def forward(self, ids, labels=None):
        logits = self.logits(ids)
        return Output(loss=F.cross_entropy(logits.float(), labels) if labels is not None else None, logits=logits)

    @torch.no_grad()
    def predict(self, batch):
        return [{"prediction": int(i)} for i in self.logits(batch["ids"]).argmax(-1)]


class LosesWeights(Bag):
    def save(self, folder):  # forgets the weights file
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"spec": self.spec.to_dict(),
                                                        "options": self.options.model_dump()}))

    @classmethod
    def load(cls, folder):
        config = json.loads((folder / "config.json").read_text())
        return cls(TaskSpec(**config["spec"]), cls.Options(**config["options"]))


class IgnoresSeed(Bag):
    @classmethod
    def create(cls, spec, options, train):
        torch.manual_seed(time.perf_counter_ns() ^ int.from_bytes(os.urandom(4), "little"))  # its own randomness
        return cls(spec, options)


class AlwaysSeedZero(Bag):
    @classmethod
    def create(cls, spec, options, train):
        torch.manual_seed(0)  # every seed gives the same model
        return cls(spec, options)


class LossStuck(Bag):
    def forward(self, ids, labels=None):  # the loss is cut off from the parameters
        logits = self.logits(ids)
        return Output(loss=F.cross_entropy(logits.detach().float(), labels) + 0 * logits.sum(), logits=logits)


class LeaksPadding(Bag):
    def __init__(self, spec, options):
        super().__init__(spec, options)
        self.embed = nn.EmbeddingBag(options.buckets, options.dim, mode="mean")  # PAD (0) counts in the mean
        with torch.no_grad():
            self.embed.weight[0].fill_(5.0)


class RandomPaddingEmbedding(Bag):
    """The leak a plugin author shipped: the padding id has an ordinary (random) embedding and enters the mean,
    so padding moves every logit while the argmax mostly survives."""

    def __init__(self, spec, options):
        super().__init__(spec, options)
        self.embed = nn.EmbeddingBag(options.buckets, options.dim, mode="mean")


class BuildsAnything(Bag):
    @classmethod
    def create(cls, spec, options, train):
        return cls(spec, options)  # no check of spec.kind


class CrashesOnLongInput(Bag):
    def encode(self, example):
        features = super().encode(example)
        if len(example["text"].split()) > 100:
            raise IndexError("position 100 out of range")
        return features


def test_a_correct_model_passes_every_check(tmp_path):
    check_builds(*build(Bag, "classification", {}), "classification")
    check_forward_backward(*build(Bag, "classification", {}))
    check_overfits(Bag, "classification", {}, steps=30, lr=5e-2)
    model, examples = build(Bag, "classification", {})
    overfit(model, examples, 5, 5e-2)
    check_save_load(model, examples, Bag, tmp_path / "m")
    check_seeded(Bag, "classification", {})
    check_batch_of_one_and_longest_input(*build(Bag, "classification", {}), "classification")
    check_padding_invariant(*build(Bag, "classification", {}), "classification")
    check_bf16(*build(Bag, "classification", {}))
    for kind in ("tagging", "seq2seq"):
        check_refuses(Bag, kind, {})


def test_save_load_that_loses_weights_is_named(tmp_path):
    model, examples = build(LosesWeights, "classification", {})
    overfit(model, examples, 5, 5e-2)
    with pytest.raises(AssertionError, match=r"save\(\) then load\(\) changed the model: loss on the same batch "
                                             r".*weights missing or different after loading: embed.weight, "
                                             r"head.weight, head.bias"):
        check_save_load(model, examples, LosesWeights, tmp_path / "m")


def test_ignoring_the_seed_is_named():
    with pytest.raises(AssertionError, match="the same seed gave different results: training losses .* own "
                                             "generator, the clock or os.urandom"):
        check_seeded(IgnoresSeed, "classification", {})
    with pytest.raises(AssertionError, match="seeds 1 and 2 gave identical initial weights: the model ignores "
                                             "the seed"):
        check_seeded(AlwaysSeedZero, "classification", {})


def test_a_loss_that_does_not_fall_is_named():
    with pytest.raises(AssertionError, match=r"the loss does not fall when overfitting one batch of 8: (\d\.\d+) at "
                                             r"the start, \1 after 30 steps"):
        check_overfits(LossStuck, "classification", {}, steps=30, lr=5e-2)


def test_leaking_padding_is_named():
    with pytest.raises(AssertionError, match=r"padding changed the predictions of examples \[.*Mask padded"):
        check_padding_invariant(*build(LeaksPadding, "classification", {"dim": 4}), "classification")


def test_random_padding_embedding_fails_the_logits_check_untrained_and_trained():
    model, examples = build(RandomPaddingEmbedding, "classification", {})
    with pytest.raises(AssertionError, match=r"padding changed the logits at real positions by up to .*Mask padded"):
        check_padding_logits(model, examples, "classification")
    overfit(model, examples, 30, 5e-2)
    with pytest.raises(AssertionError, match=r"padding changed the logits at real positions"):
        check_padding_logits(model, examples, "classification")
    good, examples = build(Bag, "classification", {})
    check_padding_logits(good, examples, "classification")
    overfit(good, examples, 30, 5e-2)
    check_padding_logits(good, examples, "classification")


def test_building_for_an_unserved_kind_is_named():
    with pytest.raises(AssertionError, match="create\\(\\) built a model for kind 'tagging', which 'kit_bag' does "
                                             "not serve \\(serves: classification\\); raise nlpkit.Unsupported"):
        check_refuses(BuildsAnything, "tagging", {})


def test_a_crash_on_long_input_is_named():
    with pytest.raises(AssertionError, match="the longest allowed input failed: IndexError: position 100"):
        check_batch_of_one_and_longest_input(*build(CrashesOnLongInput, "classification", {}), "classification")


def test_tiny_data_has_the_contract_shapes():
    spec, examples = tiny_examples("tagging")
    assert spec.kind == "tagging" and spec.labels[0] == "O"
    assert all(len(ex["tokens"]) == len(ex["tags"]) and all(isinstance(t, int) for t in ex["tags"]) for ex in examples)
    assert {r["target"].split()[0] for r in tiny_records("seq2seq")} <= {"eins", "zwei", "drei", "vier", "rot", "blau",
                                                                        "haus", "baum", "hund", "katze", "gross",
                                                                        "klein"}


def test_a_metric_that_ignores_predictions_is_named():
    from nlpkit_plugins.tasks.classification import Classification

    class Constant(Classification):
        def metrics(self, examples, predictions):
            return {"accuracy": 0.5}

    check_task(Classification, {})
    with pytest.raises(AssertionError, match="'accuracy' does not prefer gold predictions: 0.5 for gold, 0.5 for "
                                             "wrong"):
        check_task(Constant, {})


class FragileFiles(Dataset):
    name = "fragile"
    kind = "classification"

    def load(self, split):
        rows = (self.data_dir / "data.tsv").read_text().splitlines()
        return [{"label": row.split("\t")[0], "text": row.split("\t")[1]} for row in rows]


def test_a_dataset_that_crashes_on_a_bad_file_is_named(tmp_path):
    (tmp_path / "data.tsv").write_text("a\tgood line\nno tab\n")
    with pytest.raises(AssertionError, match="a malformed file crashed with IndexError: .*raise NlpkitError naming "
                                             "file and line"):
        check_bad_file(FragileFiles, {}, tmp_path, "data.tsv", "line 2")


def test_the_pytest_kit_fails_a_broken_plugin_with_the_reason(tmp_path):
    """Run as a plugin author would: subclass the kit, name the class, run pytest."""
    (tmp_path / "test_broken.py").write_text(textwrap.dedent("""\
        from test_testing_kit import LosesWeights
        from nlpkit.testing import ModelKit


        class TestBroken(ModelKit):
            model_class = LosesWeights
            lr = 5e-2
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
                             str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = result.stdout
    assert result.returncode == 1, out[-2000:]
    assert out.strip().splitlines()[-1].startswith("1 failed, 11 passed"), out[-500:]
    assert "FAILED test_broken.py::TestBroken::test_save_load_same_predictions[classification]" in out
    assert "weights missing or different after loading: embed.weight" in out
