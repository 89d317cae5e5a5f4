"""Expanding a validated recipe into runs: every task x model entry x seed, each name, pair and option checked
(every problem collected and said at once) before anything trains."""

from __future__ import annotations

import reprlib
from pathlib import Path

from pydantic import ValidationError

from nlpkit.config.recipe import _SEEDS, RecipeSchema, RunSpec, TaskEntry
from nlpkit.config.yaml_lines import _validation_error, _Where
from nlpkit.errors import NlpkitError, did_you_mean
from nlpkit.plugins import Registry
from nlpkit.train.options import TrainOptions

LENGTH = {"epochs", "max_steps", "min_steps"}  # training options that say how long a run trains
BUDGET = {"min_steps", "early_stopping"}  # a model's default length: taken only where the recipe sets none


def expand(name: str, schema: RecipeSchema, tasks: list[TaskEntry], registry: Registry, where: _Where) -> list[RunSpec]:
    """Every task x model x seed, in recipe order; every name and pair checked before anything trains."""
    runs: list[RunSpec] = []
    problems: list[str] = []
    shared = schema.train.model_dump(exclude_unset=True)
    kinds = {registry.tasks[e.name].kind for e in tasks if e.name in registry.tasks}
    problems += [f"{where(('track', i))}: unknown tracker '{name}'.{did_you_mean(name, registry.trackers)} "
                 f"Installed: {', '.join(sorted(registry.trackers)) or '(none)'}"
                 for i, name in enumerate(schema.track) if name not in registry.trackers]
    for ti, entry in enumerate(tasks):
        tloc = ("task",) if schema.task is entry else ("tasks", ti - (1 if schema.task else 0))
        try:
            task_cls = registry.task(entry.name)
            dataset_cls = registry.dataset(entry.dataset)
        except NlpkitError as err:
            problems.append(f"{where(tloc)}: {err}")
            continue
        if dataset_cls.kind != task_cls.kind:
            problems.append(
                f"{where(tloc + ('dataset',))}: dataset '{entry.dataset}' holds {dataset_cls.kind} data; "
                f"task '{entry.name}' needs {task_cls.kind} data"
            )
        for opts_cls, key, values in ((task_cls.Options, "options", entry.options),
                                      (dataset_cls.Options, "dataset_options", entry.dataset_options)):
            try:
                opts_cls.model_validate(values)
            except ValidationError as err:
                problems.append(str(_validation_error(err, where, opts_cls, tloc + (key,))).split("\n  ", 1)[1])
        for label, options in schema.models.items():
            options = dict(options or {})
            plugin = options.pop("model", label)
            mloc = ("models", label)
            seeds = options.pop("seeds", schema.seeds)  # a model entry may run its own seeds (slow models: fewer)
            try:
                seeds = _SEEDS.validate_python(seeds)
            except ValidationError as err:
                why = "; ".join(e["msg"] for e in err.errors())
                problems.append(f"{where(mloc + ('seeds',))}: 'models.{label}.seeds' must be a list of integers "
                                f"from 0 to 2**32-1, each once (got {seeds!r}: {why})")
                continue
            try:
                model_cls = registry.model(plugin)
            except NlpkitError as err:
                problems.append(f"{where(mloc)}: {err}")
                continue
            if task_cls.kind not in model_cls.serves:
                reason = model_cls.why_not.get(task_cls.kind, f"it serves {', '.join(model_cls.serves) or 'nothing'}")
                problems.append(
                    f"{where(mloc)}: model '{plugin}' cannot serve task '{entry.name}' ({task_cls.kind}): {reason}"
                )
                continue
            train_keys = set(TrainOptions.model_fields)
            defaults = model_cls.train_defaults_for(task_cls.kind)
            wrong = sorted(set(defaults) - train_keys)
            if wrong:
                problems.append(f"{where(mloc)}: model plugin '{plugin}' declares train_defaults that are not train "
                                f"options: {', '.join(wrong)} (a bug in the plugin)")
                continue
            chosen = {**shared, **{k: v for k, v in options.items() if k in train_keys}}
            if LENGTH & set(chosen):  # the recipe says how long to train: a model's default budget does not apply
                defaults = {k: v for k, v in defaults.items() if k not in BUDGET}
            train_values = {**defaults, **chosen}
            opts_cls = model_cls.options_for(task_cls.kind)
            # a key for another kind of this recipe's tasks (e.g. crf beside a classification task) skips this run
            model_values = {k: v for k, v in options.items() if k not in train_keys
                            and (k in opts_cls.model_fields or not _applies_elsewhere(model_cls, k, kinds))}
            try:
                train = TrainOptions.model_validate(train_values)
                model_opts = opts_cls.model_validate(model_values)
            except ValidationError as err:
                problems.append(_model_entry_error(err, where, mloc, model_cls, task_cls.kind))
                continue
            for seed in seeds:
                runs.append(
                    RunSpec(name, entry, label, plugin, model_opts.model_dump(exclude_unset=True), train, seed,
                            Path(schema.output), track=list(dict.fromkeys(schema.track)))
                )
    named: dict[str, TaskEntry] = {}
    for entry in tasks:  # a run folder is a run's identity: two entries of one name would share (and reuse) runs
        other = named.setdefault(entry.key, entry)
        if other is not entry:
            problems.append(f"{where(('tasks',))}: two task entries are both called '{entry.key}' (task "
                            f"'{entry.name}' on '{other.dataset}' and on '{entry.dataset}'), so their runs would "
                            f"share folders ({entry.key}-<model>-seed<n>) and one would be skipped as the other's: "
                            f"give each entry an id of its own (e.g. id: {entry.dataset}-2)")
    if problems:
        raise NlpkitError("Invalid recipe:\n  " + "\n  ".join(dict.fromkeys(problems)))
    return runs


def _applies_elsewhere(model_cls: type, key: str, kinds: set[str]) -> bool:
    """Whether ``key`` is an option of the model for another task kind among the recipe's ``kinds``."""
    return any(key in model_cls.options_for(k).model_fields for k in kinds if k in model_cls.serves)


def _model_entry_error(err: ValidationError, where: _Where, mloc: tuple, model_cls: type, kind: str) -> str:
    valid = sorted(set(TrainOptions.model_fields) | set(model_cls.options_for(kind).model_fields) | {"model", "seeds"})
    messages = []
    for e in err.errors():
        loc = mloc + tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            name = str(e["loc"][-1])
            other = [k for k in model_cls.serves if k != kind and name in model_cls.options_for(k).model_fields]
            hint = (f" It applies to {' and '.join(other)} tasks only (this is a {kind} task)." if other
                    else did_you_mean(name, valid))
            messages.append(f"{where(loc)}: unknown key '{key}' for model '{model_cls.name}'.{hint} "
                            f"Valid keys: {', '.join(valid)}")
        else:
            messages.append(f"{where(loc)}: '{key}': {e['msg']} (got {reprlib.repr(e.get('input'))})")
    return "\n  ".join(messages)
