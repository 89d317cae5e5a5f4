"""The ``sweep:`` block: its schema, and its checks against the recipe it sits in, said like every recipe error
(file, line or ``--set``, the key, the closest valid one) and all at once, before anything trains.

A parameter path names one setting of the recipe's runs: ``models.<entry>.<option>`` (a training key or one of
the entry's model options for the task's kind), ``train.<key>`` (every swept entry) or ``task.options.<key>``.
The objective is a validation metric the task produces: trials never see the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nlpkit.config.recipe import COSMETIC, Recipe, RunSpec, Seeds, TaskEntry
from nlpkit.config.yaml_lines import _validation_error, _Where
from nlpkit.contract import TaskSpec
from nlpkit.errors import NlpkitError, did_you_mean
from nlpkit.plugins import Registry
from nlpkit.train.options import TrainOptions


class Parameter(BaseModel):
    """One searched setting: a float or int range (``log``: sampled on a log scale; ``step``: on a grid) or a list
    of choices."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: int | float | None = None  # an int stays one (shown as written)
    high: int | float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _a_real_range(self) -> Parameter:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("a categorical parameter takes 'choices' only (not low, high, log or step)")
            if any(not isinstance(c, (str, int, float, bool)) and c is not None for c in self.choices):
                raise ValueError("choices must be plain values (numbers, strings, true/false, null)")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes 'low' and 'high', not 'choices' (or use type categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs both 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int parameter needs whole numbers for low, high and step")
        return self

    def values_to_check(self) -> list[Any]:
        """The values whose validity stands for the whole range: its ends, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class SweepSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str = Field(description="validation.<metric> to optimise, e.g. validation.accuracy (never test).")
    direction: Literal["maximize", "minimize"] | None = Field(None, description="Default: the task's own, when "
                                                              "the metric is its main metric.")
    trials: int = Field(20, ge=1, description="Trials per study (one study per task x swept model entry).")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = Field(5, ge=0, description="Trials that finish before the pruner stops any.")
    pruner_warmup_steps: int = Field(0, ge=0, description="Optimizer steps a trial trains before it may be pruned "
                                     "(an evaluation at exactly this step may prune it).")
    parameters: dict[str, Parameter] = Field(min_length=1)
    best_seeds: Seeds | None = Field(None, description="Seeds for the best settings' runs; default: the recipe's.")
    storage: str | None = Field(None, min_length=1, description="An Optuna storage URL (e.g. sqlite:///sweep.db, "
                                "postgresql://...); default: a journal file in <output>/<recipe>/sweep/.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Seed of the sampler (reproducible proposals).")


@dataclass
class StudyPlan:
    """One Optuna study: the settings of one task x model entry searched, starting from the recipe's run."""

    name: str  # <recipe>.<task>.<entry>
    key: str  # <task>-<entry>: file names
    base: RunSpec  # the recipe's own run of this task x entry (its first seed): what a trial changes
    parameters: dict[str, Parameter]
    task_options: type[BaseModel]  # the task's Options: a trial's task.options are checked against it
    model_options: type[BaseModel]  # the model's options for the task's kind


@dataclass
class Sweep:
    schema: SweepSchema
    studies: list[StudyPlan]
    metric: str  # the validation metric's name (without "validation.")
    direction: str
    best_seeds: list[int]
    folder: Path  # <output>/<recipe>/sweep: the journal, the per-study summaries

    @property
    def storage_url(self) -> str | None:
        return self.schema.storage

    def describe(self) -> list[str]:
        """The sweep's plan in a few lines (``nlpkit run --dry-run``)."""
        s = self.schema
        lines = [f"Sweep: {len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'} of {s.trials} trials "
                 f"({s.sampler} sampler, {s.pruner} pruner, {self.direction} validation.{self.metric}); the best "
                 f"settings then run over seeds {', '.join(map(str, self.best_seeds))}; study storage: "
                 f"{s.storage or self.folder / 'journal.log'}"]
        for study in self.studies:
            lines.append(f"  {study.name}: trials in {study.base.output / study.base.recipe / 'trials'}/"
                         f"{study.key}-<hash>")
            lines += [f"    {path}: {p.model_dump(exclude_defaults=True)}" for path, p in study.parameters.items()]
        return lines


def _tasks(recipe: Recipe) -> list[TaskEntry]:
    return ([recipe.schema.task] if recipe.schema.task else []) + list(recipe.schema.tasks)


def parameter_paths(recipe: Recipe, registry: Registry) -> list[str]:
    """Every setting a sweep may search in this recipe (for did-you-mean and the error's list)."""
    tasks = _tasks(recipe)
    kinds = {registry.task(t.name).kind for t in tasks}
    tunable_train = [k for k in TrainOptions.model_fields if f"train.{k}" not in COSMETIC]
    paths = [f"train.{k}" for k in tunable_train]
    if len(tasks) == 1:
        paths += [f"task.options.{k}" for k in registry.task(tasks[0].name).Options.model_fields]
    for label, options in recipe.schema.models.items():
        model_cls = registry.model(dict(options or {}).get("model", label))
        keys = dict.fromkeys(tunable_train)
        for kind in sorted(kinds & set(model_cls.serves)):
            keys |= dict.fromkeys(model_cls.options_for(kind).model_fields)
        paths += [f"models.{label}.{k}" for k in keys]
    return paths


_TYPE = "SWEEPTYPE"  # the entity type of the made-up tagging example


def produces(produced: set[str], name: str) -> bool:
    """Whether ``name`` is among ``produced``, a per-type pattern such as f1_<TYPE> matching f1_PER."""
    return name in produced or any(p.endswith("<TYPE>") and name.startswith(p.removesuffix("<TYPE>"))
                                   and len(name) > len(p) - 6 for p in produced)


def produced_metrics(task_cls: type, entry: TaskEntry) -> set[str]:
    """The scalar metrics the task computes, found by scoring two made-up examples of its kind (tasks declare
    only their main metric); just the main metric when that fails (an unusual task)."""
    kind = task_cls.kind
    if kind == "classification":
        labels, examples = ["a", "b"], [{"text": "x", "label": 0}, {"text": "y", "label": 1}]
        preds = [{"prediction": 0}, {"prediction": 1}]
    elif kind == "tagging":  # per-type scores of the made-up type come back as e.g. "f1_<TYPE>"
        labels, examples = ["O", f"B-{_TYPE}", f"I-{_TYPE}"], [{"tokens": ["x", "y", "z"], "tags": [1, 2, 0]}]
        preds = [{"prediction": [1, 2, 0]}]
    else:
        labels, examples = [], [{"source": "x y", "target": "x y"}]
        preds = [{"prediction": "x y"}]
    try:
        task = task_cls(task_cls.Options(**entry.options), TaskSpec(kind=kind, labels=labels))
        scored = task.metrics(examples, preds)
        return {k.replace(_TYPE, "<TYPE>") for k, v in scored.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
    except Exception:  # noqa: BLE001 - a task that cannot score made-up data: its main metric at least
        return {task_cls.main_metric}


def load_sweep(recipe: Recipe, registry: Registry) -> Sweep:
    """The recipe's sweep block, checked against its models, tasks and settings; NlpkitError listing every
    problem (file:line, did-you-mean) otherwise."""
    where = recipe.where or _Where(recipe.path, {}, {})
    try:
        schema = SweepSchema.model_validate(recipe.schema.sweep)
    except ValidationError as err:
        raise _validation_error(err, where, SweepSchema, ("sweep",)) from None
    problems: list[str] = []
    tasks = _tasks(recipe)
    valid = parameter_paths(recipe, registry)
    for path in schema.parameters:
        if path not in valid:
            loc = ("sweep", "parameters", path)
            shape = ("a parameter is models.<entry>.<option>, train.<key> or task.options.<key> (with one task)"
                     if path.split(".")[0] not in ("models", "train", "task") else
                     f"valid: {', '.join(p for p in valid if p.startswith(path.rsplit('.', 1)[0] + '.')) or '(none)'}")
            problems.append(f"{where(loc)}: unknown parameter 'sweep.parameters.{path}'.{did_you_mean(path, valid)} "
                            f"({shape}; `nlpkit plugins --options <model>` lists a model's options)")
    metric, direction = _objective(schema, tasks, registry, where, problems)
    studies = [] if problems else _studies(recipe, schema, tasks, registry)
    for study in studies:
        for path, param in study.parameters.items():
            for value in param.values_to_check():
                try:
                    trial_settings(study, {path: value})
                except ValidationError as err:
                    why = "; ".join(e["msg"] for e in err.errors())
                    problems.append(f"{where(('sweep', 'parameters', path))}: 'sweep.parameters.{path}': {value!r} "
                                    f"is not a valid value there: {why}")
    if schema.sampler == "grid":
        for path, param in schema.parameters.items():
            if param.type == "float" and param.step is None:
                problems.append(f"{where(('sweep', 'parameters', path))}: 'sweep.parameters.{path}': the grid "
                                "sampler needs a 'step' for a float range (or give categorical choices)")
    if problems:
        raise NlpkitError("Invalid recipe:\n  " + "\n  ".join(dict.fromkeys(problems)))
    best_seeds = list(schema.best_seeds or recipe.schema.seeds)
    folder = Path(recipe.schema.output) / recipe.name / "sweep"
    return Sweep(schema, studies, metric, direction, best_seeds, folder)


def _objective(schema: SweepSchema, tasks: list[TaskEntry], registry: Registry, where: _Where,
               problems: list[str]) -> tuple[str, str]:
    """The validation metric's name and the direction (given, or the task's own for its main metric)."""
    loc = ("sweep", "metric")
    split, _, name = schema.metric.partition(".")
    if split == "test":
        problems.append(f"{where(loc)}: 'sweep.metric': {schema.metric} is a test metric; a sweep selects on the "
                        f"validation split only (trials never read test): use validation.{name or '<metric>'}")
        return name, schema.direction or "maximize"
    if split != "validation" or not name:
        problems.append(f"{where(loc)}: 'sweep.metric': write validation.<metric>, e.g. validation.accuracy "
                        f"(got {schema.metric!r})")
        return name, schema.direction or "maximize"
    directions = set()
    for entry in tasks:
        task_cls = registry.task(entry.name)
        produced = produced_metrics(task_cls, entry)
        if not produces(produced, name):
            problems.append(f"{where(loc)}: 'sweep.metric': task '{entry.name}' does not produce '{name}'."
                            f"{did_you_mean(name, produced)} It produces: {', '.join(sorted(produced))}")
        elif name == task_cls.main_metric:
            directions.add("maximize" if task_cls.greater_is_better else "minimize")
    if schema.direction:
        return name, schema.direction
    if len(directions) != 1 or any(name != registry.task(e.name).main_metric for e in tasks):
        problems.append(f"{where(loc)}: 'sweep.direction': say maximize or minimize ({name} is not the main "
                        "metric of every task, so its direction is not known)")
        return name, "maximize"
    return name, directions.pop()


def _studies(recipe: Recipe, schema: SweepSchema, tasks: list[TaskEntry], registry: Registry) -> list[StudyPlan]:
    """One study per task x swept entry: the entries a parameter names (models.<entry>.*), or every entry when
    the parameters are all shared (train.*, task.options.*); each study searches its entry's and the shared ones."""
    named = {p.split(".")[1] for p in schema.parameters if p.startswith("models.")}
    labels = [label for label in recipe.schema.models if label in named] if named else list(recipe.schema.models)
    studies = []
    for entry in tasks:
        for label in labels:
            base = next((r for r in recipe.runs if r.task == entry and r.label == label), None)
            if base is None:
                continue
            params = {p: v for p, v in schema.parameters.items()
                      if not p.startswith("models.") or p.split(".")[1] == label}
            task_cls = registry.task(entry.name)
            studies.append(StudyPlan(f"{recipe.name}.{entry.key}.{label}", f"{entry.key}-{label}", base, params,
                                     task_cls.Options, registry.model(base.model).options_for(task_cls.kind)))
    return studies


def trial_settings(study: StudyPlan, values: dict[str, Any]) -> tuple[TaskEntry, dict[str, Any], TrainOptions]:
    """The task entry, model options and training options of ``study``'s run with ``values`` (parameter path ->
    value) put in, each validated by its schema (pydantic ValidationError when a value does not fit)."""
    base = study.base
    task_options, model_options = dict(base.task.options), dict(base.model_options)
    train = base.train.model_dump(exclude_unset=True)
    for path, value in values.items():
        parts = path.split(".")
        key = parts[-1]
        if parts[0] == "task":
            task_options[key] = value
        elif key in TrainOptions.model_fields:
            train[key] = value
        else:
            model_options[key] = value
    study.task_options.model_validate(task_options)
    model = study.model_options.model_validate(model_options).model_dump(exclude_unset=True)
    return (base.task.model_copy(update={"options": task_options}), model, TrainOptions.model_validate(train))
