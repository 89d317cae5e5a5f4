"""The task and dataset checks of the conformance kit: plain functions that raise AssertionError saying what
is wrong; :class:`nlpkit.testing.TaskKit` and :class:`nlpkit.testing.DatasetKit` run them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from nlpkit.contract import TASK_KINDS, Dataset, Task
from nlpkit.errors import NlpkitError
from nlpkit.testing.model_checks import _fail
from nlpkit.testing.tiny import gold_predictions, tiny_splits, wrong_predictions


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


