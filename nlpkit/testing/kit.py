"""The conformance kits: pytest classes that a model, task or dataset plugin keeps the contract.

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

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from pydantic import BaseModel

from nlpkit.contract import TASK_KINDS, Dataset, Model, Task
from nlpkit.testing.checks import (
    check_bad_file,
    check_dataset,
    check_task,
    check_task_follows_dataset_labels,
    check_task_unknown_label,
)
from nlpkit.testing.model_checks import (
    build,
    check_batch_of_one_and_longest_input,
    check_bf16,
    check_builds,
    check_forward_backward,
    check_padding_invariant,
    check_padding_logits,
    check_refuses,
    check_save_load,
    check_seeded,
    judge_overfit,
    overfit,
)

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


