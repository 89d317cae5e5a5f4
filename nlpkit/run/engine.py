"""The engine: turns a recipe's runs into trained models, metrics and run folders.

One run = load the dataset's splits, let the task turn them into examples, build the model (it fits
its vocabulary on the training split), encode every example once, train through the shared loop,
score the test split, and write the run folder (results.json last, so its presence means "finished").
The lifecycle hooks (nlpkit.hookspecs) hear of it on the main process. ``run_recipe`` runs a recipe's runs
(each in a process of its own, see nlpkit.run.pool, or in this one) and then calls back its caller (the CLI
writes the report there).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import set_seed

from nlpkit.config.recipe import Recipe, RunSpec, TaskEntry
from nlpkit.contract import Dataset, Model, RunContext, Task
from nlpkit.data import loading as data
from nlpkit.errors import NlpkitError
from nlpkit.files import disk_errors, write_json, write_jsonl, write_yaml
from nlpkit.plugins import Registry, plugin_manager, registry
from nlpkit.run.diagnostics import run_warnings
from nlpkit.run.encoded import cache_folder, encode_splits, model_files_digest
from nlpkit.run.folders import RunLocked, check_creatable, is_finished, run_lock, set_aside_changed, write_failure
from nlpkit.run.provenance import data_provenance, provenance, versions
from nlpkit.run.ranks import agree_with_rank_zero, leave_together
from nlpkit.track.require import require_trackers
from nlpkit.train import checkpoint
from nlpkit.train.checkpoint import Interrupted
from nlpkit.train.hardware import PeakMemory, device_description, resolve_device
from nlpkit.train.log import MetricsLog
from nlpkit.train.loop import evaluate, make_accelerator, predict, start_model, train

SPLITS = ("train", "validation", "test")
log = logging.getLogger("nlpkit.run.engine")


def load_splits(entry: TaskEntry, reg: Registry,
                splits: tuple[str, ...] = SPLITS) -> tuple[Task, dict[str, list[dict]]]:
    """The task (with its label set fitted on train) and its examples for every split in ``splits`` (a sweep's
    trials leave the test split out: it is never read for them)."""
    task_cls = reg.task(entry.name)
    dataset_cls = reg.dataset(entry.dataset)
    folder = data.data_dir(entry.dataset, entry.data_dir)
    dataset: Dataset = dataset_cls(dataset_cls.Options(**entry.dataset_options), folder)
    task: Task = task_cls(task_cls.Options(**entry.options))
    raw = {split: dataset.load(split) for split in splits}
    for split, records in raw.items():
        if not records:
            raise NlpkitError(f"Dataset '{entry.dataset}' has no examples in its {split} split")
    return task, task.prepare(raw, dataset.labels())


def data_source(entry: TaskEntry, reg: Registry) -> dict[str, Any]:
    """The provenance of a task entry's data (see :func:`nlpkit.run.provenance.data_provenance`)."""
    dataset_cls = reg.dataset(entry.dataset)
    options = dataset_cls.Options(**entry.dataset_options)
    hub_id = getattr(options, "hub_id", None)
    return data_provenance(entry.dataset, data.data_dir(entry.dataset, entry.data_dir),
                           options.model_dump(), hub_id if isinstance(hub_id, str) else None)


def fresh_accelerate_state() -> None:
    """Forget the accelerate state a previous run of this process left (its device, its mixed precision),
    keeping the process group: a second run with another precision would otherwise die with "AcceleratorState
    has already been initialized". Only needed where runs share a process (torchrun, in-process runs)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


_AMBIENT_THREADS: list[int] = []  # torch's thread count before any run set its own (a --jobs worker: its share)


def use_threads(threads: int | None) -> None:
    """CPU threads for the run about to start: ``train.threads``, else what the process had before any run set
    one, so a run's setting does not leak into the next run of the recipe."""
    if not _AMBIENT_THREADS:
        _AMBIENT_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(threads or _AMBIENT_THREADS[0])


def run_context(spec: RunSpec, reg: Registry, main: bool, restart: bool = False) -> RunContext:
    """What the lifecycle hooks are told about ``spec`` (the task's kind and metric come from its class), and the
    checkpoint step it will resume from (``restart`` clears the checkpoints: none)."""
    task_cls = reg.task(spec.task.name)
    resume = None if restart else checkpoint.latest_step(spec.folder / "checkpoints")
    return RunContext(settings=spec.to_dict(), folder=spec.folder, name=spec.name, task=spec.task.name,
                      task_kind=task_cls.kind, dataset=spec.task.dataset, model=spec.label, plugin=spec.model,
                      seed=spec.seed, main_metric=task_cls.main_metric, greater_is_better=task_cls.greater_is_better,
                      is_main_process=main, trackers=tuple(spec.track), resume_step=resume or 0)


def execute(spec: RunSpec, reg: Registry | None = None, cache: dict | None = None,
            restart: bool = False, own_process: bool = False) -> dict[str, Any]:
    """Train and evaluate one run; write its folder; return its results. An unfinished run resumes from
    its newest checkpoint unless ``restart``. A run that raises leaves ``failure.json`` (what, where, when)
    in its folder, so any launcher can tell it failed. ``own_process``: this process exists for this run only
    (nlpkit.run.pool), which results.json says beside the peak memory. The lifecycle hooks (nlpkit.hookspecs)
    fire on the main process only."""
    memory = PeakMemory().start(own_process)
    reg = reg or registry()
    use_threads(spec.train.threads)
    main = int(os.environ.get("RANK", "0")) == 0
    folder = spec.folder
    with ExitStack() as held:
        locked = None
        if main:
            try:
                held.enter_context(run_lock(folder))
            except RunLocked as err:
                locked = err
        agree_with_rank_zero(locked)  # under DDP every rank skips a run held by another process, at once
        if is_finished(folder) and not restart and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return json.loads((folder / "results.json").read_text())  # another process finished it meanwhile
        if main:
            (folder / "failure.json").unlink(missing_ok=True)  # this attempt's outcome replaces the last one's
        run, hooks = None, None
        try:
            run = run_context(spec, reg, main, restart)
            hooks = plugin_manager().hook if main else None
            if hooks:
                hooks.on_run_start(run=run)
            results = _execute(spec, reg, cache, restart, memory, run, hooks)
        except Interrupted as err:
            if hooks:
                hooks.on_run_end(run=run, status="interrupted", error=err)
            raise  # stopped on purpose: the checkpoint is its record, it resumes when run again
        except BaseException as err:
            if main:
                write_failure(folder, err)
            if hooks:
                try:
                    hooks.on_run_end(run=run, status="failed", error=err)
                except Exception as hook_err:  # noqa: BLE001 - the run's own error is the one to report
                    log.warning("on_run_end of a plugin raised %r for the failed run %s", hook_err, spec.name)
            raise
        if hooks:
            hooks.on_run_end(run=run, status="finished", error=None)
        return results


def _execute(spec: RunSpec, reg: Registry, cache: dict | None, restart: bool, memory: PeakMemory,
             run: RunContext, hooks: Any) -> dict[str, Any]:
    model_cls: type[Model] = reg.model(spec.model)
    main = int(os.environ.get("RANK", "0")) == 0
    folder = spec.folder
    cache = cache if cache is not None else {}
    splits = SPLITS if spec.test_split else tuple(s for s in SPLITS if s != "test")
    key = (spec.task.model_dump_json(), splits)
    if key not in cache:  # the same task data serves every model and seed of a recipe
        cache.clear()
        cache[key] = load_splits(spec.task, reg, splits)
    task, examples = cache[key]
    t = spec.train  # subsets: train sampled with the run's seed; validation and test with one seed for every run
    train_ex = data.subset(examples["train"], t.max_train_examples, spec.seed, t.subset)
    val_ex = data.subset(examples["validation"], t.max_eval_examples, 0, t.subset)
    test_ex = data.subset(examples["test"], t.max_test_examples, 0, t.subset) if spec.test_split else []
    cut = [f"test split cut to {len(test_ex)} of {len(examples['test'])} examples (max_test_examples, {t.subset})"
           ] if spec.test_split and len(test_ex) < len(examples["test"]) else []
    settings = spec.settings_hash

    checkpoints = folder / "checkpoints"
    set_seed(spec.seed)
    if main:
        if restart:
            checkpoint.clear(checkpoints)
        write_yaml(folder / "recipe.yaml", {**spec.to_dict(), "settings_hash": settings})
        write_json(folder / "task.json", task.state())
    model = start_model(model_cls, lambda: model_cls.create(task.spec, model_cls.Options(**spec.model_options),
                                                            train_ex), checkpoints, spec.train.device)
    accelerator, precision = make_accelerator(spec.train, type(model))  # create() may pick a per-kind class
    splits = {"train": train_ex, "validation": val_ex, "test": test_ex}
    identities = encoded_identities(spec, reg, model, checkpoints / "model", splits, examples) if cache_folder() \
        else {}
    encoded = encode_splits(model.encode, splits, identities, write=main)
    log = MetricsLog(folder / "metrics.jsonl", enabled=main)
    fit = train(model, task, encoded["train"], encoded["validation"], val_ex, spec.train, spec.seed, log,
                accelerator, precision, checkpoints, run=run, hooks=hooks)
    predictions = predict(model, encoded["test"], spec.train, accelerator, final=True) if spec.test_split else []
    test_metrics = task.metrics(test_ex, predictions) if spec.test_split else {}
    details = test_metrics.pop("details", None)
    device = device_description(accelerator.device)
    results = {
        "recipe": spec.recipe,
        "run": spec.name,
        "task": task.name,
        "task_kind": task.kind,
        "dataset": spec.task.dataset,
        "model": spec.label,
        "plugin": spec.model,
        "seed": spec.seed,
        "settings_hash": settings,
        "main_metric": task.main_metric,
        "greater_is_better": task.greater_is_better,
        "test": test_metrics,
        "test_details": details,
        "validation": fit.best_validation,
        "best_step": fit.best_step,
        "steps": fit.steps,
        "epochs": fit.epochs,
        "train_examples": len(train_ex),
        "test_examples": len(test_ex),
        "test_examples_available": len(examples["test"]) if spec.test_split else None,
        "warnings": run_warnings(folder / "metrics.jsonl", task, test_ex, predictions, cut),
        "train_seconds": round(fit.train_seconds, 3),
        "train_examples_per_s": round(fit.examples / max(fit.train_seconds, 1e-9), 2),
        "train_tokens_per_s": round(fit.tokens / max(fit.train_seconds, 1e-9), 1),
        "peak_memory_mb": round(memory.mb(accelerator.device), 1),
        "peak_memory_measured": memory.how(accelerator.device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": device,
        "device_type": accelerator.device.type,
        "precision": precision,
        "processes": fit.world_size,
        "effective_batch_size": fit.effective_batch_size,
        "resumed_from_step": fit.resumed_from,
        "labels": task.spec.labels if task.spec else [],
        "provenance": provenance(settings_hash=settings, device=device, precision=precision,
                                 data=data_source(spec.task, reg)),
    }
    if fit.stopped_early:
        results["stopped_early"] = fit.stopped_early
    if not spec.test_split:
        results["test_split"] = "skipped"  # scored on validation only (a sweep trial); see folders.results_problem
    if main:
        if hooks:
            hooks.on_results(run=run, results=results)
        with disk_errors(folder / "model"):
            model.save(folder / "model")
        if spec.test_split:
            write_jsonl(folder / "predictions.jsonl",
                        [task.record(i, ex, p) for i, (ex, p) in enumerate(zip(test_ex, predictions))])
        write_json(folder / "results.json", results)  # last: marks the run finished
        checkpoint.clear(checkpoints)
    accelerator.wait_for_everyone()
    return results


def encoded_identities(spec: RunSpec, reg: Registry, model: Model, saved: Any, splits: dict[str, list[dict]],
                       available: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """What each split's encoded features depend on (see nlpkit.run.encoded): the data, the task, which examples
    were taken, the model and its tokenizer files. The seed counts only where it sampled the training split."""
    t = spec.train
    common = {"data": data_source(spec.task, reg), "task": spec.task.model_dump(mode="json"), "model": spec.model,
              "class": f"{type(model).__module__}.{type(model).__qualname__}", "options": spec.model_options,
              "model_files": model_files_digest(saved)}
    sampled = len(splits["train"]) < len(available["train"])
    taken = {"train": (t.max_train_examples, t.subset, spec.seed if sampled else None),
             "validation": (t.max_eval_examples, t.subset), "test": (t.max_test_examples, t.subset)}
    return {split: {**common, "taken": taken[split], "examples": len(exs)} for split, exs in splits.items()}


def in_process_requested() -> bool:
    """``NLPKIT_IN_PROCESS=1`` runs every run inside the ``nlpkit run`` process (debuggers, profilers,
    tests that patch nlpkit's functions); the default gives each run a fresh process."""
    return os.environ.get("NLPKIT_IN_PROCESS", "") not in ("", "0", "false")


def run_recipe(recipe: Recipe, force: bool = False, echo: Any = print, restart: bool = False,
               jobs: int = 1, finish: Callable[[Recipe, Callable[[str], Any]], Any] | None = None,
               launch: Callable[[list[tuple[int, RunSpec]], int, bool, Any], Outcome] | None = None,
               ) -> list[dict[str, Any]]:
    """Run every run of the recipe, skipping finished ones and resuming interrupted ones (``restart``
    starts those over); each run in a fresh process of its own, ``jobs`` of them at a time (see nlpkit.run.pool).
    Then ``finish(recipe, say)`` on the main process, unless a signal stopped the recipe (the CLI writes the
    summary and the comparison report there: this layer knows nothing of reports). A failed run does not stop
    the others; afterwards :class:`NlpkitError` names each failed run with its error. ``launch(todo, total,
    restart, say) -> Outcome`` carries the runs out instead of the local pool (``nlpkit run --launcher``, see
    nlpkit.launch); under torchrun/accelerate every rank runs them in its own process, as before."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    main = int(os.environ.get("RANK", "0")) == 0
    say = echo if main else (lambda *_: None)  # under DDP only the main process talks
    if world > 1 and jobs > 1:
        raise NlpkitError("--jobs runs separate runs side by side; it cannot be combined with torchrun/accelerate")
    if world > 1:  # every rank must see the folders as they were before the main process moves any
        ranks = PartialState(cpu=resolve_device(recipe.runs[0].train.device).type == "cpu")  # as start_model
        ranks.wait_for_everyone()
    found = None
    if main:
        try:
            require_trackers({name for spec in recipe.runs for name in spec.track}, registry())
            will_write = [spec.folder for spec in recipe.runs if force or not is_finished(spec.folder)]
            for folder in will_write + ([recipe.reports] if finish else []):
                check_creatable(folder)  # a folder that cannot be written is said before any run trains
            set_aside_changed(recipe.runs, say)
        except Exception as err:  # noqa: BLE001 - said to every rank just below, then raised there
            found = err
    agree_with_rank_zero(found)  # under DDP: every rank stops with rank 0's error (a barrier, too)
    todo = []
    for i, spec in enumerate(recipe.runs, 1):
        if is_finished(spec.folder) and not force:
            say(f"[{i}/{len(recipe.runs)}] {spec.name}: finished, skipping (--force re-runs)")
            continue
        if force and main:
            (spec.folder / "results.json").unlink(missing_ok=True)
        todo.append((i, spec))
    if launch is not None and world == 1:
        outcome = launch(todo, len(recipe.runs), restart or force, say)
    elif world > 1 or in_process_requested():
        outcome = run_in_process(todo, len(recipe.runs), restart or force, say)
    else:
        from nlpkit.run.pool import run_isolated

        outcome = run_isolated(todo, len(recipe.runs), jobs, restart or force, say)
    if outcome.stopped:
        raise outcome.stopped
    if main and finish is not None:
        finish(recipe, say)
    if world > 1:  # leave together: a rank that exits while another still talks to it can abort in gloo's teardown
        leave_together()
    if outcome.failed:
        lines = "\n  ".join(f"{name}: {error}" for name, error in outcome.failed)
        raise NlpkitError(f"{len(outcome.failed)} of {len(todo)} runs failed (the others finished; failure.json "
                          f"in each failed run's folder):\n  {lines}")
    return outcome.results


@dataclass
class Outcome:
    """What became of the runs ``nlpkit run`` started."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run name, the first line of its error)
    stopped: Interrupted | None = None  # set when a signal stopped the recipe


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def run_in_process(todo: list[tuple[int, RunSpec]], n: int, restart: bool, say: Any) -> Outcome:
    """Run ``todo`` one after another in this process (torchrun's ranks, or ``NLPKIT_IN_PROCESS=1``): each
    run starts from a fresh accelerate state, and its peak memory from a reset high-water mark."""
    reg, cache, outcome = registry(), {}, Outcome()
    for i, spec in todo:
        step = None if restart else checkpoint.latest_step(spec.folder / "checkpoints")
        resuming = f"resuming from the checkpoint at step {step} (--restart starts over)" if step else "training"
        say(f"[{i}/{n}] {spec.name}: {resuming}")
        fresh_accelerate_state()
        if spec.train.threads:
            torch.set_num_threads(spec.train.threads)
        try:
            res = execute(spec, reg, cache, restart=restart)
        except Interrupted as err:
            say(f"[{i}/{n}] {spec.name}: {err}")
            outcome.stopped = err
            return outcome
        except RunLocked as err:
            say(f"[{i}/{n}] {spec.name}: skipped, {err}")
            continue
        except Exception as err:  # noqa: BLE001 - one failed run does not stop the others
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise  # the other ranks may be waiting in a collective: carrying on could hang them
            message = f"{type(err).__name__}: {first_line(str(err))}"
            say(f"[{i}/{n}] {spec.name}: failed: {message}")
            outcome.failed.append((spec.name, message))
            continue
        say(done_line(i, n, spec, res))
        outcome.results.append(res)
    return outcome


def done_line(i: int, n: int, spec: RunSpec, res: dict[str, Any]) -> str:
    metric = res["main_metric"]
    procs = f", {res['processes']} processes" if res.get("processes", 1) > 1 else ""
    split = "validation" if res.get("test_split") == "skipped" else "test"  # a sweep's trial: validation only
    stopped = f", {res['stopped_early']}" if split == "validation" and res.get("stopped_early") else ""
    value = (res[split] or {})[metric]
    return (f"[{i}/{n}] {spec.name}: {split} {metric} = {value:.4f} ({res['train_seconds']:.0f}s{stopped}, "
            f"{res['train_examples_per_s']:.1f} examples/s{procs}, {res['precision']})")


__all__ = ["execute", "run_recipe", "load_splits", "evaluate", "torch", "versions"]
