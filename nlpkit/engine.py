"""The engine: turns a recipe's runs into trained models, metrics and run folders.

One run = load the dataset's splits, let the task turn them into examples, build the model (it fits
its vocabulary on the training split), encode every example once, train through the shared loop,
score the test split, and write the run folder (results.json last, so its presence means "finished").
"""

from __future__ import annotations

import json
import os
import platform
import sys
from contextlib import nullcontext
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import set_seed

from nlpkit import checkpoint, data
from nlpkit.contract import Dataset, Model, Task
from nlpkit.errors import NlpkitError
from nlpkit.hardware import device_description, peak_memory_mb
from nlpkit.plugins import Registry, registry
from nlpkit.recipe import COSMETIC, Recipe, RunSpec, TaskEntry, flatten
from nlpkit.runs import MetricsLog, is_finished, run_lock, write_json, write_jsonl, write_yaml
from nlpkit.training import evaluate, make_accelerator, predict, start_model, train

SPLITS = ("train", "validation", "test")


def load_splits(entry: TaskEntry, reg: Registry) -> tuple[Task, dict[str, list[dict]]]:
    """The task (with its label set fitted on train) and its examples for every split."""
    task_cls = reg.task(entry.name)
    dataset_cls = reg.dataset(entry.dataset)
    folder = data.data_dir(entry.dataset, entry.data_dir)
    dataset: Dataset = dataset_cls(dataset_cls.Options(**entry.dataset_options), folder)
    task: Task = task_cls(task_cls.Options(**entry.options))
    raw = {split: dataset.load(split) for split in SPLITS}
    for split, records in raw.items():
        if not records:
            raise NlpkitError(f"Dataset '{entry.dataset}' has no examples in its {split} split")
    return task, task.prepare(raw, dataset.labels())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("nlpkit", "torch", "transformers", "accelerate", "datasets", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def refuse_changed_settings(folder: Path, spec: RunSpec) -> None:
    """An unfinished run resumes only with the settings it was started with: resuming its checkpoint under
    others would give results that belong to neither."""
    saved = folder / "recipe.yaml"
    if not saved.exists():
        return
    before, now = flatten(yaml.safe_load(saved.read_text())), flatten(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    changed = sorted(k for k in (before.keys() | now.keys()) - COSMETIC if before.get(k) != now.get(k))
    if changed:
        shown = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise NlpkitError(f"{folder}: this unfinished run was started with other settings ({shown}); resuming its "
                          "checkpoint would mix them. Run with --restart to start it over (or restore the recipe).")


_AMBIENT_THREADS: list[int] = []  # torch's thread count before any run set its own (a --jobs worker: its share)


def use_threads(threads: int | None) -> None:
    """CPU threads for the run about to start: ``train.threads``, else what the process had before any run set
    one, so a run's setting does not leak into the next run of the recipe."""
    if not _AMBIENT_THREADS:
        _AMBIENT_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(threads or _AMBIENT_THREADS[0])


def execute(spec: RunSpec, reg: Registry | None = None, cache: dict | None = None,
            restart: bool = False) -> dict[str, Any]:
    """Train and evaluate one run; write its folder; return its results. An unfinished run resumes from
    its newest checkpoint unless ``restart``."""
    reg = reg or registry()
    use_threads(spec.train.threads)
    model_cls: type[Model] = reg.model(spec.model)
    main = int(os.environ.get("RANK", "0")) == 0
    folder = spec.folder
    cache = cache if cache is not None else {}
    key = (spec.task.model_dump_json(),)
    if key not in cache:  # the same task data serves every model and seed of a recipe
        cache.clear()
        cache[key] = load_splits(spec.task, reg)
    task, examples = cache[key]
    train_ex = examples["train"][: spec.train.max_train_examples]
    val_ex = examples["validation"][: spec.train.max_eval_examples]
    test_ex = examples["test"][: spec.train.max_eval_examples]

    with run_lock(folder) if main else nullcontext():
        if is_finished(folder) and not restart and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return json.loads((folder / "results.json").read_text())  # another process finished it meanwhile
        checkpoints = folder / "checkpoints"
        set_seed(spec.seed)
        if main:
            if restart:
                checkpoint.clear(checkpoints)
            elif checkpoint.manifests(checkpoints):
                refuse_changed_settings(folder, spec)
            write_yaml(folder / "recipe.yaml", spec.to_dict())
            write_json(folder / "task.json", task.state())
        model = start_model(model_cls, lambda: model_cls.create(task.spec, model_cls.Options(**spec.model_options),
                                                                train_ex), checkpoints, spec.train.device)
        accelerator, precision = make_accelerator(spec.train, type(model))  # create() may pick a per-kind class
        encoded = {name: [model.encode(ex) for ex in exs] for name, exs in
                   (("train", train_ex), ("validation", val_ex), ("test", test_ex))}
        log = MetricsLog(folder / "metrics.jsonl", enabled=main)
        fit = train(model, task, encoded["train"], encoded["validation"], val_ex, spec.train, spec.seed, log,
                    accelerator, precision, checkpoints)
        predictions = predict(model, encoded["test"], spec.train, accelerator)
        test_metrics = task.metrics(test_ex, predictions)
        details = test_metrics.pop("details", None)
        results = {
            "recipe": spec.recipe,
            "task": task.name,
            "task_kind": task.kind,
            "dataset": spec.task.dataset,
            "model": spec.label,
            "plugin": spec.model,
            "seed": spec.seed,
            "main_metric": task.main_metric,
            "greater_is_better": task.greater_is_better,
            "test": test_metrics,
            "test_details": details,
            "validation": fit.best_validation,
            "best_step": fit.best_step,
            "steps": fit.steps,
            "epochs": fit.epochs,
            "train_examples": len(train_ex),
            "train_seconds": round(fit.train_seconds, 3),
            "train_examples_per_s": round(fit.examples / max(fit.train_seconds, 1e-9), 2),
            "train_tokens_per_s": round(fit.tokens / max(fit.train_seconds, 1e-9), 1),
            "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "device": device_description(accelerator.device),
            "device_type": accelerator.device.type,
            "precision": precision,
            "processes": fit.world_size,
            "effective_batch_size": fit.effective_batch_size,
            "resumed_from_step": fit.resumed_from,
            "labels": task.spec.labels if task.spec else [],
            "versions": versions(),
            "argv": sys.argv,
        }
        if main:
            model.save(folder / "model")
            write_jsonl(folder / "predictions.jsonl",
                        [task.record(i, ex, p) for i, (ex, p) in enumerate(zip(test_ex, predictions))])
            write_json(folder / "results.json", results)  # last: marks the run finished
            checkpoint.clear(checkpoints)
        accelerator.wait_for_everyone()
    return results


def run_recipe(recipe: Recipe, force: bool = False, echo: Any = print, restart: bool = False,
               jobs: int = 1) -> list[dict[str, Any]]:
    """Run every run of the recipe, skipping finished ones and resuming interrupted ones (``restart``
    starts those over); ``jobs`` > 1 runs that many side by side. Then write the summary and the comparison report."""
    main = int(os.environ.get("RANK", "0")) == 0
    say = echo if main else (lambda *_: None)  # under DDP only the main process talks
    todo = []
    for i, spec in enumerate(recipe.runs, 1):
        if is_finished(spec.folder) and not force:
            say(f"[{i}/{len(recipe.runs)}] {spec.name}: finished, skipping (--force re-runs)")
            continue
        if force and main:
            (spec.folder / "results.json").unlink(missing_ok=True)
        todo.append((i, spec))
    if jobs > 1 and len(todo) > 1:
        from nlpkit.jobs import run_parallel

        results = run_parallel(todo, len(recipe.runs), jobs, restart or force, say)
    else:
        reg, results, cache = registry(), [], {}
        for i, spec in todo:
            step = None if restart or force else checkpoint.latest_step(spec.folder / "checkpoints")
            resuming = f"resuming from the checkpoint at step {step} (--restart starts over)" if step else "training"
            say(f"[{i}/{len(recipe.runs)}] {spec.name}: {resuming}")
            res = execute(spec, reg, cache, restart=restart or force)
            say(done_line(i, len(recipe.runs), spec, res))
            results.append(res)
    if main:
        from nlpkit.report import summarize, write_plugin_report

        folders = [s.folder for s in recipe.runs]
        say(f"Summary: {summarize(folders, recipe.reports)}")
        say(f"Report: {write_plugin_report(folders, recipe.reports)}")
    return results


def done_line(i: int, n: int, spec: RunSpec, res: dict[str, Any]) -> str:
    metric = res["main_metric"]
    procs = f", {res['processes']} processes" if res.get("processes", 1) > 1 else ""
    return (f"[{i}/{n}] {spec.name}: test {metric} = {res['test'][metric]:.4f} ({res['train_seconds']:.0f}s, "
            f"{res['train_examples_per_s']:.1f} examples/s{procs}, {res['precision']})")


__all__ = ["execute", "run_recipe", "load_splits", "evaluate", "torch"]
