"""The conformance kit: pytest checks that a model, task or dataset plugin keeps the contract.

Subclass a kit and name the plugin; pytest runs every check (per task kind the model serves):

    from nlpkit.testing import DatasetKit, ModelKit, TaskKit

    class TestMyModel(ModelKit):
        plugin = "my_model"                  # the registered name (or set model_class = MyModel)
        options = {"hidden_size": 16}        # keep it tiny: the kit trains it several times

    class TestMyTask(TaskKit):
        plugin = "my_task"

    class TestMyDataset(DatasetKit):
        plugin = "my_dataset"
        def write_data(self, folder):        # a few lines in the dataset's file format
            ...
        def write_bad_data(self, folder):    # a malformed file: loading it must say where
            ...

The data is tiny and generated here from the shapes in :mod:`nlpkit.contract`, so the model checks do not
depend on any task plugin being installed. Every check is also a plain function (``check_*``) that raises
``AssertionError`` with a message saying what is wrong, for use outside pytest.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from accelerate.utils import set_seed
from pydantic import BaseModel

from nlpkit.contract import TASK_KINDS, Dataset, Model, Output, Task, TaskSpec, Unsupported
from nlpkit.errors import NlpkitError

# ----------------------------------------------------------------------------------- tiny data

TOPICS = {
    "animal": "cat dog horse mouse tiger eagle whale rabbit".split(),
    "food": "bread cheese apple rice soup pasta honey salad".split(),
    "place": "city river mountain village harbour desert island forest".split(),
}
FILLER = "the a small big old new near with and then".split()
TAGS = ["O", "B-ANIMAL", "B-FOOD", "B-PLACE", "I-PLACE"]
PLACES = [("new", "york"), ("san", "diego"), ("el", "paso"), ("le", "havre")]
LEXICON = {"one": "eins", "two": "zwei", "three": "drei", "four": "vier", "red": "rot", "blue": "blau",
           "house": "haus", "tree": "baum", "dog": "hund", "cat": "katze", "big": "gross", "small": "klein"}


def tiny_records(kind: str, n: int = 24, seed: int = 0) -> list[dict]:
    """Raw records of a task kind, as a dataset plugin returns them (labels and tags as strings)."""
    rng = random.Random(f"{kind}-{seed}")
    out = []
    for _ in range(n):
        if kind == "classification":
            topic = rng.choice(list(TOPICS))
            words = [rng.choice(TOPICS[topic]) if rng.random() < 0.6 else rng.choice(FILLER)
                     for _ in range(rng.randint(4, 8))]
            words[rng.randrange(len(words))] = rng.choice(TOPICS[topic])
            out.append({"text": " ".join(words), "label": topic})
        elif kind == "tagging":
            tokens: list[str] = []
            tags: list[str] = []
            while len(tokens) < rng.randint(4, 9):
                r = rng.random()
                if r < 0.5:
                    tokens.append(rng.choice(FILLER))
                    tags.append("O")
                elif r < 0.7:
                    tokens.append(rng.choice(TOPICS["animal"]))
                    tags.append("B-ANIMAL")
                elif r < 0.85:
                    tokens.append(rng.choice(TOPICS["food"]))
                    tags.append("B-FOOD")
                else:
                    tokens.extend(rng.choice(PLACES))
                    tags.extend(["B-PLACE", "I-PLACE"])
            out.append({"tokens": tokens, "tags": tags})
        elif kind == "seq2seq":
            words = [rng.choice(list(LEXICON)) for _ in range(rng.randint(3, 6))]
            out.append({"source": " ".join(words), "target": " ".join(LEXICON[w] for w in words)})
        else:
            raise ValueError(f"unknown task kind '{kind}' (one of {', '.join(TASK_KINDS)})")
    return out


def label_names(kind: str) -> list[str]:
    return {"classification": list(TOPICS), "tagging": list(TAGS), "seq2seq": []}[kind]


def to_example(kind: str, record: dict, labels: list[str]) -> dict:
    """A raw record as a task would prepare it (label names -> ids), per the shapes in nlpkit.contract."""
    if kind == "classification":
        return {"text": record["text"], "label": labels.index(record["label"])}
    if kind == "tagging":
        return {"tokens": list(record["tokens"]), "tags": [labels.index(t) for t in record["tags"]]}
    return {"source": record["source"], "target": record["target"]}


def tiny_examples(kind: str, n: int = 24, seed: int = 0) -> tuple[TaskSpec, list[dict]]:
    """A task spec and ``n`` prepared examples of ``kind``: what ``Model.create`` receives."""
    labels = label_names(kind)
    return TaskSpec(kind=kind, labels=labels), [to_example(kind, r, labels) for r in tiny_records(kind, n, seed)]


def long_example(kind: str, words: int) -> dict:
    """One example of ``words`` words, to push a model past its longest allowed input."""
    pool = [w for ws in TOPICS.values() for w in ws]
    tokens = [pool[i % len(pool)] for i in range(words)]
    if kind == "classification":
        return {"text": " ".join(tokens), "label": 0}
    if kind == "tagging":
        return {"tokens": tokens, "tags": [0] * words}
    source = [list(LEXICON)[i % len(LEXICON)] for i in range(words)]
    return {"source": " ".join(source), "target": " ".join(LEXICON[w] for w in source)}


# ----------------------------------------------------------------------------------- model checks


def _fail(message: str) -> None:
    raise AssertionError(message)


def _name(model_cls: type) -> str:
    return getattr(model_cls, "name", model_cls.__name__)


def build(model_cls: type[Model], kind: str, options: dict, seed: int = 0, n: int = 24) -> tuple[Model, list[dict]]:
    """Seed as the engine does, then create the model on ``n`` tiny training examples; returns both."""
    spec, examples = tiny_examples(kind, n)
    set_seed(seed)
    model = model_cls.create(spec, model_cls.Options(**options), examples)
    return model, examples


def make_batch(model: Model, examples: list[dict]) -> dict[str, Any]:
    return model.collate([model.encode(ex) for ex in examples])


def batch_loss(model: Model, batch: dict[str, Any]) -> torch.Tensor:
    out = model(**batch)
    if not isinstance(out, Output):
        _fail(f"forward() returned {type(out).__name__}; it must return nlpkit.Output(loss=...)")
    if out.loss is None or not torch.is_tensor(out.loss) or out.loss.dim() != 0:
        _fail(f"forward() on a batch with gold labels must give a scalar loss tensor, got {out.loss!r}")
    if not torch.isfinite(out.loss.detach()).item():
        _fail(f"forward() gave a non-finite loss: {out.loss.item()}")
    return out.loss


def train_steps(model: Model, batch: dict[str, Any], steps: int, lr: float) -> list[float]:
    """``steps`` AdamW updates on one batch, as the engine's loop makes them (param_groups, clipping)."""
    model.train()
    optimizer = torch.optim.AdamW(model.param_groups(lr, 0.0), lr=lr)
    losses = []
    for _ in range(steps):
        loss = batch_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def eval_loss(model: Model, batch: dict[str, Any]) -> float:
    model.eval()
    with torch.no_grad():
        return batch_loss(model, batch).item()


def predictions(model: Model, examples: list[dict]) -> list[Any]:
    """The ``prediction`` of each example, checked against the shape of the model's task kind."""
    model.eval()
    with torch.inference_mode():
        out = model.predict(make_batch(model, examples))
    if not isinstance(out, list) or len(out) != len(examples):
        _fail(f"predict() must return one dict per example: {len(examples)} examples, got {out!r:.200}")
    preds = []
    for ex, row in zip(examples, out):
        if not isinstance(row, dict) or "prediction" not in row:
            _fail(f"predict() must return dicts with a 'prediction' key, got {row!r:.200}")
        check_prediction_shape(model.spec, ex, row["prediction"])
        preds.append(row["prediction"])
    return preds


def check_prediction_shape(spec: TaskSpec, example: dict, prediction: Any) -> None:
    kind, n = spec.kind, len(spec.labels)
    if kind == "classification" and not (isinstance(prediction, int) and 0 <= prediction < n):
        _fail(f"a classification prediction is a label id in 0..{n - 1} (an int), got {prediction!r}")
    if kind == "tagging":
        ok = isinstance(prediction, list) and all(isinstance(t, int) and 0 <= t < n for t in prediction)
        if not ok or len(prediction) != len(example["tokens"]):
            _fail(f"a tagging prediction is a list of tag ids, one per input token: {len(example['tokens'])} "
                  f"tokens, got {prediction!r:.200} (a model that truncates must still tag every token)")
    if kind == "seq2seq" and not isinstance(prediction, str):
        _fail(f"a seq2seq prediction is a string, got {prediction!r:.200}")


def check_builds(model: Model, examples: list[dict], kind: str) -> None:
    """``create`` gave a Model with trainable parameters; ``encode`` gives features with a positive ``length``."""
    if not isinstance(model, Model):
        _fail(f"create() returned {type(model).__name__}, not an nlpkit.Model")
    if model.spec.kind != kind:
        _fail(f"the model built for kind '{kind}' has spec.kind '{model.spec.kind}'")
    if sum(p.numel() for p in model.parameters() if p.requires_grad) == 0:
        _fail("the model has no trainable parameters")
    for ex in examples[:4]:
        features = model.encode(ex)
        if not isinstance(features.get("length"), int) or features["length"] < 1:
            _fail(f"encode() must set 'length' to a positive int (tokens, for batching); got {features!r:.200}")


def check_forward_backward(model: Model, examples: list[dict]) -> None:
    """A forward pass gives a finite scalar loss; backward gives finite gradients to trainable parameters."""
    model.train()
    model.zero_grad(set_to_none=True)
    batch_loss(model, make_batch(model, examples[:6])).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    if all(g is None for g in grads.values()):
        _fail("backward() reached no parameter: is the loss detached from the model?")
    bad = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    if bad:
        _fail(f"non-finite gradients in {', '.join(bad[:5])}")
    model.zero_grad(set_to_none=True)


def overfit(model: Model, examples: list[dict], steps: int, lr: float) -> tuple[float, float]:
    """Train on one batch of 8 for ``steps`` steps; its loss (dropout off) before and after."""
    batch = make_batch(model, examples[:8])
    start = eval_loss(model, batch)
    train_steps(model, batch, steps, lr)
    return start, eval_loss(model, batch)


def judge_overfit(start: float, end: float, steps: int, lr: float, ratio: float = 0.3) -> None:
    if not end < ratio * start:
        _fail(f"the loss does not fall when overfitting one batch of 8: {start:.4f} at the start, {end:.4f} after "
              f"{steps} steps at lr={lr} (needed < {ratio} x start). Is the loss connected to the parameters that "
              f"train, and are the labels read from the batch?")


def check_overfits(model_cls: type[Model], kind: str, options: dict, steps: int = 30, lr: float = 3e-3,
                   ratio: float = 0.3) -> None:
    """A few dozen steps on one batch drive its loss well below where it started."""
    model, examples = build(model_cls, kind, options)
    judge_overfit(*overfit(model, examples, steps, lr), steps, lr, ratio)


def _state_diff(a: Model, b: Model) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    missing = sorted(set(sa) ^ set(sb))
    differ = [k for k in sa if k in sb and (sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k]))]
    return missing + differ


def check_save_load(model: Model, examples: list[dict], model_cls: type[Model], folder: Path) -> None:
    """A (trained) model saved and loaded again has the same weights, loss and predictions, both predicting with
    their test-time settings (``prepare_inference(True)``, as the engine does for the test split and ``nlpkit
    predict`` after loading)."""
    model.prepare_inference(True)
    batch = make_batch(model, examples[:8])
    before_loss, before = eval_loss(model, batch), predictions(model, examples)
    model.save(folder)
    torch.manual_seed(987654)  # a different RNG state: loading must not depend on it
    loaded = model_cls.load(folder)
    if not isinstance(loaded, Model):
        _fail(f"{_name(model_cls)}.load() returned {type(loaded).__name__}, not an nlpkit.Model")
    loaded.prepare_inference(True)
    after_loss, after = eval_loss(loaded, make_batch(loaded, examples[:8])), predictions(loaded, examples)
    changed = _state_diff(model, loaded)
    if changed or not math.isclose(before_loss, after_loss, rel_tol=1e-5, abs_tol=1e-6) or before != after:
        wrong = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
        _fail(f"save() then load() changed the model: loss on the same batch {before_loss:.6f} before, "
              f"{after_loss:.6f} after; {len(wrong)} of {len(before)} predictions differ"
              + (f" (first: {before[wrong[0]]!r:.80} -> {after[wrong[0]]!r:.80})" if wrong else "")
              + (f"; weights missing or different after loading: {', '.join(changed[:8])}" if changed else "")
              + ". save() must write every trained weight (and the vocabulary) and load() must read them back.")


def check_seeded(model_cls: type[Model], kind: str, options: dict, lr: float = 3e-3,
                 seeds_differ: bool = True) -> None:
    """The same seed gives the same model and the same training; another seed another initialisation."""

    def run(seed: int) -> tuple[Model, list[float], list]:
        model, examples = build(model_cls, kind, options, seed=seed)
        set_seed(seed)
        losses = train_steps(model, make_batch(model, examples[:8]), 3, lr)
        return model, losses, predictions(model, examples)

    (a, losses_a, preds_a), (b, losses_b, preds_b) = run(1), run(1)
    if losses_a != losses_b or preds_a != preds_b or _state_diff(a, b):
        _fail(f"the same seed gave different results: training losses {losses_a} vs {losses_b}. The engine seeds "
              f"python's random, numpy and torch before create(); a model must take its randomness from them, "
              f"not from its own generator, the clock or os.urandom (and fit its vocabulary deterministically).")
    if seeds_differ and not _state_diff(build(model_cls, kind, options, seed=2)[0],
                                        build(model_cls, kind, options, seed=1)[0]):
        _fail("seeds 1 and 2 gave identical initial weights: the model ignores the seed (does it seed torch "
              "itself?), so repeating a run over seeds would measure nothing. Set seeds_differ = False if the "
              "model has no random initialisation by design.")


def check_batch_of_one_and_longest_input(model: Model, examples: list[dict], kind: str) -> None:
    """A batch of one example works, and so does an input longer than the model allows (it must cope: truncate,
    or window, or take any length)."""
    limit = getattr(model.options, "max_length", None)
    long = long_example(kind, 3 * limit if isinstance(limit, int) and limit > 0 else 600)
    for name, batch_examples in (("a batch of one example", examples[:1]), ("the longest allowed input", [long]),
                                 ("a padded batch of a short and a long input", [examples[0], long])):
        try:
            model.train()
            batch_loss(model, make_batch(model, batch_examples)).backward()
            predictions(model, batch_examples)
        except AssertionError as err:
            _fail(f"{name}: {err}")
        except Exception as err:
            _fail(f"{name} failed: {type(err).__name__}: {err}")
    model.zero_grad(set_to_none=True)


def check_padding_invariant(model: Model, examples: list[dict], kind: str) -> None:
    """An example's prediction does not change when it shares a batch with a longer one (padding is masked)."""
    alone = [predictions(model, [ex])[0] for ex in examples[:6]]
    together = predictions(model, examples[:6] + [long_example(kind, 20)])[:6]
    if alone != together:
        wrong = [i for i, (x, y) in enumerate(zip(alone, together)) if x != y]
        _fail(f"padding changed the predictions of examples {wrong}: alone {[alone[i] for i in wrong]!r:.200}, "
              f"in a padded batch {[together[i] for i in wrong]!r:.200}. Mask padded positions.")


def _forward_logits(model: Model, examples: list[dict]) -> torch.Tensor | None:
    with torch.no_grad():
        out = model(**make_batch(model, examples))
    return None if out.logits is None else out.logits.detach().float()


def check_padding_logits(model: Model, examples: list[dict], kind: str, atol: float = 1e-4,
                         rtol: float = 1e-3) -> None:
    """An example's logits at its real positions do not change (beyond float noise) when its batch is padded to a
    longer input: a stricter check than predictions, whose argmax can hide a leak (a random padding embedding
    that enters a mean moves every logit, yet may flip no label). Padding is assumed to follow the real
    positions (the last dimensions of the logits are cut to the lone example's size). Skipped when ``forward``
    returns no logits."""
    was_training = model.training
    model.eval()
    try:
        long = long_example(kind, 20)
        for i, example in enumerate(examples[:4]):
            alone, together = _forward_logits(model, [example]), _forward_logits(model, [example, long])
            if alone is None or together is None:
                return
            if alone.dim() != together.dim() or any(a > b for a, b in zip(alone.shape[1:], together.shape[1:])):
                _fail(f"logits of a lone example {tuple(alone.shape)} do not fit inside those of a padded batch "
                      f"{tuple(together.shape)}: pad after the real positions")
            real = together[0][tuple(slice(0, n) for n in alone.shape[1:])]
            diff = (real - alone[0]).abs().max().item()
            allowed = atol + rtol * alone.abs().max().item()
            if not diff <= allowed:
                _fail(f"padding changed the logits at real positions by up to {diff:.3g} (allowed {allowed:.2g}): "
                      f"example {i} alone vs in a batch padded to a 20-word input. Mask padded positions "
                      "(padding_idx, masked means and attention, packed sequences).")
    finally:
        model.train(was_training)


def check_bf16(model: Model, examples: list[dict], device: str = "cpu") -> None:
    """Forward, backward and predict run under bf16 autocast (what the engine uses where bf16 is fast)."""
    model.to(device)
    try:
        with torch.autocast(device, dtype=torch.bfloat16):
            model.train()
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in make_batch(model, examples[:4]).items()}
            batch_loss(model, batch).backward()
            model.eval()
            with torch.inference_mode():
                model.predict(batch)
    except AssertionError as err:
        _fail(f"under bf16 autocast: {err}")
    except Exception as err:
        _fail(f"under bf16 autocast: {type(err).__name__}: {err} (compute the loss in float32, e.g. "
              f"F.cross_entropy(logits.float(), labels), and cast masks to the activations' dtype)")
    finally:
        model.zero_grad(set_to_none=True)
        model.to("cpu")


def check_refuses(model_cls: type[Model], kind: str, options: dict) -> None:
    """Asked for a task kind it does not serve, ``create`` raises ``nlpkit.Unsupported`` saying why."""
    spec, examples = tiny_examples(kind)
    try:
        model_cls.create(spec, model_cls.Options(**options), examples)
    except (Unsupported, NlpkitError) as err:
        if len(str(err).strip()) < 10:
            _fail(f"create() for unserved kind '{kind}' raised {type(err).__name__} without a reason: {str(err)!r}")
        return
    except Exception as err:
        _fail(f"create() for unserved kind '{kind}' crashed with {type(err).__name__}: {err}; raise "
              f"nlpkit.Unsupported with a reason instead (e.g. from why_not)")
    _fail(f"create() built a model for kind '{kind}', which '{_name(model_cls)}' does not serve "
          f"(serves: {', '.join(model_cls.serves)}); raise nlpkit.Unsupported with a reason")


# ----------------------------------------------------------------------------------- pytest kits


def _resolve(kit: Any, kind: str, attr: str) -> type:
    cls = getattr(kit, attr, None)
    if cls is not None:
        return cls
    if not kit.plugin:
        pytest.fail(f"{getattr(kit, '__name__', type(kit).__name__)}: set plugin = '<registered name>' (or {attr})")
    from nlpkit.plugins import registry

    return registry().get(kind, kit.plugin)


class ModelKit:
    """Conformance checks for a model plugin, run for every task kind it serves (``kinds`` narrows that).

    Models are built and trained once per task kind (class-scoped fixtures) and shared by the checks that
    only read them, so a kit with tiny options runs in seconds."""

    plugin: ClassVar[str] = ""
    model_class: ClassVar[type[Model] | None] = None
    options: ClassVar[dict[str, Any]] = {}
    kinds: ClassVar[tuple[str, ...] | None] = None
    lr: ClassVar[float] = 3e-3
    overfit_steps: ClassVar[int | dict[str, int]] = {"classification": 30, "tagging": 30, "seq2seq": 60}
    overfit_ratio: ClassVar[float] = 0.3
    seeds_differ: ClassVar[bool] = True

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        cls = _resolve(self, "models", "model_class")
        if "kind" in metafunc.fixturenames:
            metafunc.parametrize("kind", [k for k in TASK_KINDS if k in (self.kinds or cls.serves)], scope="class")
        if "unserved_kind" in metafunc.fixturenames:
            others = [k for k in TASK_KINDS if k not in cls.serves]
            metafunc.parametrize("unserved_kind", others or [pytest.param(None, marks=pytest.mark.skip(
                reason="the model serves every task kind"))])

    @classmethod
    def steps(cls, kind: str) -> int:
        return cls.overfit_steps if isinstance(cls.overfit_steps, int) else cls.overfit_steps.get(kind, 30)

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _one_thread(cls) -> Iterator[None]:
        """Tiny models run many times faster on one thread than on several (no thread sync per tiny op)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)

    @pytest.fixture(scope="class")
    @classmethod
    def model_cls(cls) -> type[Model]:
        return _resolve(cls, "models", "model_class")

    @pytest.fixture(scope="class")
    @classmethod
    def plugin_options(cls) -> dict[str, Any]:
        """The model options every check uses; override this (class-scoped) fixture when they need a file."""
        return dict(cls.options)

    @pytest.fixture(scope="class")
    @classmethod
    def fresh(cls, model_cls, kind, plugin_options) -> tuple[Model, list[dict]]:
        return build(model_cls, kind, plugin_options)

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls, model_cls, kind, plugin_options) -> tuple[Model, list[dict], float, float]:
        model, examples = build(model_cls, kind, plugin_options)
        start, end = overfit(model, examples, cls.steps(kind), cls.lr)
        return model, examples, start, end

    def test_registered(self, model_cls: type[Model]) -> None:
        if self.plugin:
            from nlpkit.plugins import registry

            assert registry().model(self.plugin) is model_cls
        assert model_cls.serves and set(model_cls.serves) <= set(TASK_KINDS), model_cls.serves
        assert issubclass(model_cls.Options, BaseModel)

    def test_builds(self, fresh, kind):
        check_builds(*fresh, kind)

    def test_forward_backward(self, fresh):
        check_forward_backward(*fresh)

    def test_overfits_one_batch(self, trained, kind):
        judge_overfit(trained[2], trained[3], self.steps(kind), self.lr, self.overfit_ratio)

    def test_save_load_same_predictions(self, trained, model_cls, tmp_path):
        check_save_load(trained[0], trained[1], model_cls, tmp_path / "model")

    def test_same_seed_same_result(self, model_cls, kind, plugin_options):
        check_seeded(model_cls, kind, plugin_options, self.lr, self.seeds_differ)

    def test_batch_of_one_and_longest_input(self, fresh, kind):
        check_batch_of_one_and_longest_input(*fresh, kind)

    def test_padding_does_not_change_predictions(self, trained, kind):
        check_padding_invariant(trained[0], trained[1], kind)

    def test_padding_does_not_change_logits(self, fresh, trained, kind):
        check_padding_logits(fresh[0], fresh[1], kind)  # untrained: no learned weight can hide a leak yet
        check_padding_logits(trained[0], trained[1], kind)

    def test_bf16_autocast(self, fresh):
        model = fresh[0]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and type(model).prefers_fp32_on_cpu:
            pytest.skip(f"{type(model).__name__} prefers fp32 on CPU (the engine never autocasts it there); "
                        "run the kit on a GPU to check bf16")
        check_bf16(*fresh, device)

    def test_refuses_unserved_kind(self, model_cls, unserved_kind, plugin_options):
        check_refuses(model_cls, unserved_kind, plugin_options)


# ----------------------------------------------------------------------------------- task checks


def tiny_splits(kind: str) -> dict[str, list[dict]]:
    """Raw train/validation/test records of a kind; validation and test only use labels seen in train."""
    return {"train": tiny_records(kind, 24, 0), "validation": tiny_records(kind, 8, 1),
            "test": tiny_records(kind, 8, 2)}


def check_example_shape(kind: str, ex: dict, labels: list[str], where: str) -> None:
    n = len(labels)
    if kind == "classification":
        ok = isinstance(ex.get("text"), str) and isinstance(ex.get("label"), int) and 0 <= ex["label"] < n
        expected = "{'text': str, 'label': label id}"
    elif kind == "tagging":
        tokens, tags = ex.get("tokens"), ex.get("tags")
        ok = (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens) and isinstance(tags, list)
              and len(tags) == len(tokens) and all(isinstance(t, int) and 0 <= t < n for t in tags))
        expected = "{'tokens': [str], 'tags': [tag id, one per token]}"
    else:
        ok = isinstance(ex.get("source"), str) and isinstance(ex.get("target"), str)
        expected = "{'source': str, 'target': str}"
    if not ok:
        _fail(f"{where}: a {kind} example is {expected}, got {ex!r:.200}")


def gold_predictions(kind: str, examples: list[dict]) -> list[dict]:
    field = {"classification": "label", "tagging": "tags", "seq2seq": "target"}[kind]
    return [{"prediction": ex[field]} for ex in examples]


def wrong_predictions(kind: str, examples: list[dict], labels: list[str]) -> list[dict]:
    if kind == "classification":
        return [{"prediction": (ex["label"] + 1) % len(labels)} for ex in examples]
    if kind == "tagging":
        return [{"prediction": [(t + 1) % len(labels) for t in ex["tags"]]} for ex in examples]
    return [{"prediction": "zzz qqq"} for _ in examples]


def check_task(task_cls: type[Task], options: dict) -> None:
    """prepare() gives examples of the task's kind and a spec; metrics rank gold above wrong predictions;
    record/render/parse work; the task rebuilds from its saved state with the same metrics."""
    kind = task_cls.kind
    if kind not in TASK_KINDS:
        _fail(f"task kind '{kind}' is not one of {TASK_KINDS}")
    task = task_cls(task_cls.Options(**options))
    splits = tiny_splits(kind)
    out = task.prepare(splits)
    if set(out) != set(splits) or any(len(out[s]) != len(splits[s]) for s in splits):
        _fail(f"prepare() must return every split with one example per record: got "
              f"{ {s: len(v) for s, v in out.items()} } for { {s: len(v) for s, v in splits.items()} }")
    if task.spec is None or task.spec.kind != kind:
        _fail(f"prepare() must set self.spec = TaskSpec(kind='{kind}', ...); got {task.spec!r}")
    labels = task.spec.labels
    if kind != "seq2seq":
        used = {r["label"] for r in splits["train"]} if kind == "classification" else \
            {t for r in splits["train"] for t in r["tags"]}
        if len(set(labels)) != len(labels) or not used <= set(labels):
            _fail(f"spec.labels must list every training label once: {labels} (training labels: {sorted(used)})")
    for split, examples in out.items():
        for i, ex in enumerate(examples):
            check_example_shape(kind, ex, labels, f"prepare() {split} example {i}")
    test = out["test"]
    best, worst = task.metrics(test, gold_predictions(kind, test)), task.metrics(test, wrong_predictions(
        kind, test, labels))
    for name, metrics in (("gold", best), ("wrong", worst)):
        if task_cls.main_metric not in metrics:
            _fail(f"metrics() must include the main metric '{task_cls.main_metric}'; got {sorted(metrics)}")
        bad = [k for k, v in metrics.items() if k != "details" and not (isinstance(v, (int, float))
                                                                         and math.isfinite(v))]
        if bad:
            _fail(f"metrics() on {name} predictions gave non-scalar or non-finite values for {bad}")
    sign = 1 if task_cls.greater_is_better else -1
    if not sign * best[task_cls.main_metric] > sign * worst[task_cls.main_metric]:
        _fail(f"'{task_cls.main_metric}' does not prefer gold predictions: {best[task_cls.main_metric]} for gold, "
              f"{worst[task_cls.main_metric]} for wrong ones (greater_is_better={task_cls.greater_is_better})")
    for i, (ex, pred) in enumerate(zip(test[:3], gold_predictions(kind, test[:3]))):
        json.dumps(task.record(i, ex, pred))
        if not isinstance(task.render(ex, pred), str):
            _fail("render() must return a string")
    state = json.loads(json.dumps(task.state()))
    again = task_cls.from_state(state)
    if again.spec != task.spec or again.metrics(test, gold_predictions(kind, test)) != best:
        _fail("from_state(state()) does not rebuild the same task (spec or metrics differ)")
    parsed = task.parse("the cat ate bread" if kind != "seq2seq" else "one red house")
    if not isinstance(parsed, dict):
        _fail(f"parse() must return an example dict, got {parsed!r}")


def check_task_follows_dataset_labels(task_cls: type[Task], options: dict) -> None:
    """Given the dataset's label order, ``spec.labels`` keeps it (so label ids mean the same in every run)."""
    if task_cls.kind == "seq2seq":
        return
    # Another order than the task would pick alone (not sorted), but a valid one: O first, B- before I-.
    order = ["place", "animal", "food"] if task_cls.kind == "classification" else \
        ["O", "B-PLACE", "I-PLACE", "B-FOOD", "B-ANIMAL"]
    task = task_cls(task_cls.Options(**options))
    task.prepare(tiny_splits(task_cls.kind), order)
    kept = [name for name in task.spec.labels if name in order]
    if kept != [name for name in order if name in kept]:
        _fail(f"prepare(splits, labels={order}) gave spec.labels {task.spec.labels}: keep the dataset's order")


def check_task_unknown_label(task_cls: type[Task], options: dict) -> None:
    """A label in validation/test that never occurs in training is an NlpkitError naming where it came from."""
    kind = task_cls.kind
    if kind == "seq2seq":
        return
    splits = tiny_splits(kind)
    bad = dict(splits["test"][0], where="test.txt, line 7")
    if kind == "classification":
        bad["label"] = "never-seen"
    else:
        bad["tags"] = ["B-NEVER"] + list(bad["tags"][1:])
    splits["test"] = [bad] + splits["test"][1:]
    try:
        task_cls(task_cls.Options(**options)).prepare(splits)
    except NlpkitError as err:
        if "never" not in str(err).lower() or "test.txt, line 7" not in str(err):
            _fail(f"the error for an unseen label should name it and where it came from (the record's 'where'): "
                  f"{err}")
        return
    except Exception as err:
        _fail(f"an unseen label in the test split crashed with {type(err).__name__}: {err}; raise NlpkitError")
    _fail("an unseen label in the test split was accepted silently: its id would mean nothing to the model")


class TaskKit:
    """Conformance checks for a task plugin. ``known_case`` may give (splits, predictions, expected metrics)."""

    plugin: ClassVar[str] = ""
    task_class: ClassVar[type[Task] | None] = None
    options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def task_cls(self) -> type[Task]:
        return _resolve(self, "tasks", "task_class")

    def known_case(self) -> tuple[dict[str, list[dict]], list[dict], dict[str, float]] | None:
        """Raw splits, predictions for the test split, and the metrics they must give (approximately)."""
        return None

    def test_contract(self, task_cls):
        check_task(task_cls, self.options)

    def test_keeps_dataset_label_order(self, task_cls):
        check_task_follows_dataset_labels(task_cls, self.options)

    def test_unseen_label_is_a_clear_error(self, task_cls):
        if task_cls.kind == "seq2seq":
            pytest.skip("seq2seq examples have no label set")
        check_task_unknown_label(task_cls, self.options)

    def test_metric_on_known_case(self, task_cls):
        case = self.known_case()
        if case is None:
            pytest.skip("no known_case() given")
        splits, preds, expected = case
        task = task_cls(task_cls.Options(**self.options))
        examples = task.prepare(splits)
        got = task.metrics(examples["test"], preds)
        for name, value in expected.items():
            assert got.get(name) == pytest.approx(value, abs=1e-4), f"{name}: expected {value}, got {got.get(name)}"


# ----------------------------------------------------------------------------------- dataset checks


def check_record_shape(kind: str, record: dict, where: str) -> None:
    if kind == "classification":
        ok = isinstance(record.get("text"), str) and isinstance(record.get("label"), str)
        expected = "{'text': str, 'label': str}"
    elif kind == "tagging":
        tokens, tags = record.get("tokens"), record.get("tags")
        ok = (isinstance(tokens, list) and isinstance(tags, list) and len(tokens) == len(tags) > 0
              and all(isinstance(t, str) for t in tokens + tags))
        expected = "{'tokens': [str], 'tags': [str, one per token]}"
    else:
        ok = isinstance(record.get("source"), str) and isinstance(record.get("target"), str)
        expected = "{'source': str, 'target': str}"
    if not ok:
        _fail(f"{where}: a {kind} record is {expected} (labels as names), got {record!r:.200}")


def check_dataset(dataset_cls: type[Dataset], options: dict, folder: Path | None) -> None:
    """Every split the engine reads loads, records have the kind's shape, labels() covers them, loading repeats."""
    kind = dataset_cls.kind
    if kind not in TASK_KINDS:
        _fail(f"dataset kind '{kind}' is not one of {TASK_KINDS}")
    missing = [s for s in ("train", "validation", "test") if s not in dataset_cls.splits]
    if missing:
        _fail(f"splits={dataset_cls.splits} lacks {missing}: the engine reads train, validation and test")
    dataset = dataset_cls(dataset_cls.Options(**options), folder)
    labels = dataset.labels()
    if labels is not None and (len(set(labels)) != len(labels) or not all(isinstance(x, str) for x in labels)):
        _fail(f"labels() must list each label name (a string) once, got {labels}")
    for split in ("train", "validation", "test"):
        records = dataset.load(split)
        if not records:
            _fail(f"load('{split}') returned no records")
        for i, r in enumerate(records[:200]):
            check_record_shape(kind, r, f"load('{split}') record {i}")
        if labels is not None and kind != "seq2seq":
            seen = {r["label"] for r in records} if kind == "classification" else {t for r in records
                                                                                   for t in r["tags"]}
            if not seen <= set(labels):
                _fail(f"load('{split}') has labels {sorted(seen - set(labels))} missing from labels()={labels}")
        again = dataset_cls(dataset_cls.Options(**options), folder).load(split)
        if again != records:
            _fail(f"load('{split}') gave different records the second time: splits must be deterministic")


def check_bad_file(dataset_cls: type[Dataset], options: dict, folder: Path, bad_file: str,
                   where: str | None) -> None:
    """A malformed file gives an NlpkitError that names the file (and the line, when ``where`` is given)."""
    try:
        dataset = dataset_cls(dataset_cls.Options(**options), folder)
        for split in ("train", "validation", "test"):
            dataset.load(split)
    except NlpkitError as err:
        if bad_file not in str(err) or (where and where not in str(err)):
            _fail(f"the error for a malformed file should name '{bad_file}'{f' and {where!r}' if where else ''}: "
                  f"{err}")
        return
    except Exception as err:
        _fail(f"a malformed file crashed with {type(err).__name__}: {err}; raise NlpkitError naming file and line")
    _fail(f"a malformed '{bad_file}' loaded without an error")


class DatasetKit:
    """Conformance checks for a dataset plugin. Override ``write_data`` when it reads files."""

    plugin: ClassVar[str] = ""
    dataset_class: ClassVar[type[Dataset] | None] = None
    options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def dataset_cls(self) -> type[Dataset]:
        return _resolve(self, "datasets", "dataset_class")

    def write_data(self, folder: Path) -> dict[str, Any] | None:
        """Write a tiny copy of the data in the dataset's format into ``folder``; return options to read it
        ({} when the folder alone says it), or None when the dataset needs no files."""
        return None

    def write_bad_data(self, folder: Path) -> tuple[dict[str, Any], str, str | None] | None:
        """Write malformed data; return (options, the bad file's name, e.g. 'line 3' or None)."""
        return None

    def test_splits_records_labels(self, dataset_cls, tmp_path):
        extra = self.write_data(tmp_path)
        check_dataset(dataset_cls, {**self.options, **(extra or {})}, tmp_path if extra is not None else None)

    def test_bad_file_is_a_clear_error(self, dataset_cls, tmp_path):
        bad = self.write_bad_data(tmp_path)
        if bad is None:
            pytest.skip("no write_bad_data() given (the dataset reads no files)")
        extra, name, where = bad
        check_bad_file(dataset_cls, {**self.options, **extra}, tmp_path, name, where)


# ----------------------------------------------------------------------------------- installing packages in tests


def install_package(package: Path, site: Path) -> Path:
    """Make the plugin package in ``package`` (a folder with pyproject.toml) importable and discoverable from
    ``site``, as ``pip install`` would: copy its modules and write a ``.dist-info`` holding its entry points.

    No network and no build backend, so tests can install a generated plugin in a fresh CI venv in milliseconds.
    Returns the ``.dist-info`` folder."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project.get("version", "0.0.0")
    site.mkdir(parents=True, exist_ok=True)
    tool = tomllib.loads((package / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
    modules = [f"{m}.py" for m in tool.get("py-modules", [])] + [p for p in tool.get("packages", []) if "." not in p]
    if not modules:
        modules = [p.name for p in package.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())
                   and p.name not in ("tests", "setup.py", "conftest.py")]
    for module in modules:
        source = package / module
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, site / module)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = project.get("entry-points", {})
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                for group, eps in groups.items()))
    (info / "top_level.txt").write_text("".join(Path(m).stem + "\n" for m in modules))
    return info


@contextmanager
def plugins_on_path(site: Path) -> Iterator[None]:
    """Put ``site`` on sys.path and reload the plugin registry; undo both (and forget its modules) on exit."""
    from nlpkit import plugins

    before = set(sys.modules)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugins.reset()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for name in set(sys.modules) - before:
            if str(site) in str(getattr(sys.modules[name], "__file__", "") or ""):
                del sys.modules[name]
        importlib.invalidate_caches()
        plugins.reset()
