"""Recipes: the YAML a researcher writes, validated against a typed schema and expanded into runs.

    name: agnews                     # default: the file's stem
    task: {name: classification, dataset: ag_news}   # or tasks: [..., ...]
    models:
      lstm: {epochs: 4, lr: 2.0e-3}  # training options and the model's own options, side by side
      bert: {lr: 2.0e-5, batch_size: 8}
      bert-large: {model: bert, pretrained: bert-large-uncased, seeds: [1]}   # a second entry; its own seeds
    train: {epochs: 2, batch_size: 32}   # shared training options
    seeds: [1, 2, 3]

Every error names the file, the line and the key, and the closest valid key when there is one.
``--set models.bert.lr=3e-5`` overrides any key and is validated the same way.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from nlpkit.contract import Options
from nlpkit.errors import NlpkitError, did_you_mean
from nlpkit.plugins import Registry


class TrainOptions(Options):
    """The one shared training recipe; any model entry may override any of these."""

    epochs: float = 3
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    batch_size: int = 32
    max_tokens: int | None = None  # token budget per batch (padded tokens) instead of a fixed batch size
    eval_batch_size: int | None = None  # default: 2 x batch_size
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06  # fraction of the steps spent warming the learning rate up
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    eval_every: int | None = None  # evaluate every N steps; default: every epoch
    log_every: int = 50
    early_stopping: int | None = None  # stop after N evaluations without improvement
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    checkpoint_every: int | None = None  # steps between resumable checkpoints
    keep_checkpoints: int = 2
    max_train_examples: int | None = None  # use only the first N training examples (quick runs)
    max_eval_examples: int | None = None
    progress: bool = True
    threads: int | None = None  # CPU threads for this run (torch.set_num_threads); default: torch's, or cores / --jobs


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dataset: str
    data_dir: str | None = None  # default: $NLPKIT_DATA/<dataset>
    dataset_options: dict[str, Any] = {}
    options: dict[str, Any] = {}


class RecipeSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    output: str = "runs"
    reports: str = "reports"
    task: TaskEntry | None = None
    tasks: list[TaskEntry] = []
    models: dict[str, dict[str, Any] | None]
    train: TrainOptions = TrainOptions()
    seeds: list[int] = [1]


@dataclass
class RunSpec:
    """One run of the matrix: a task on a dataset, one model entry, one seed."""

    recipe: str
    task: TaskEntry
    label: str  # the model entry's name in the recipe (usually the plugin name)
    model: str  # the model plugin
    model_options: dict[str, Any]
    train: TrainOptions
    seed: int
    output: Path = field(default=Path("runs"))

    @property
    def name(self) -> str:
        return f"{self.task.name}-{self.label}-seed{self.seed}"

    @property
    def folder(self) -> Path:
        return self.output / self.recipe / self.name

    @property
    def settings_hash(self) -> str:
        """The identity of this run's configuration (every setting but the seed), see :func:`settings_hash`."""
        return settings_hash(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "task": self.task.model_dump(),
            "label": self.label,
            "model": self.model,
            "model_options": self.model_options,
            "train": self.train.model_dump(),
            "seed": self.seed,
        }


# Settings that do not change what a run computes: they are left out of its identity, and a run may resume
# with other values of them.
COSMETIC = {"train.progress", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.threads"}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}"""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, sub in tree.items():
        out |= flatten(sub, f"{prefix}.{key}" if prefix else str(key))
    return out


def settings_hash(resolved: dict[str, Any]) -> str:
    """12 hex digits identifying a resolved run's configuration (``RunSpec.to_dict()``, or a run folder's
    recipe.yaml): every setting except the seed, the recipe's name and the cosmetic keys. Seeds of one
    configuration share it; any change of what is computed changes it."""
    flat = flatten(json.loads(json.dumps(resolved, default=str)))
    kept = {k: v for k, v in flat.items() if k not in COSMETIC and k not in ("seed", "recipe")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Recipe:
    name: str
    path: Path | None
    schema: RecipeSchema
    runs: list[RunSpec]
    reports: Path


# --- reading ------------------------------------------------------------------------------------


def _line_map(text: str) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[path + (key.value,)] = key.start_mark.line + 1
                walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


class _Where:
    """Says where a key came from: 'recipe.yaml, line 12' or '--set models.bert.lr'."""

    def __init__(self, path: Path | None, lines: dict[tuple, int], overrides: dict[tuple, str]):
        self.path, self.lines, self.overrides = path, lines, overrides

    def __call__(self, loc: tuple) -> str:
        loc = tuple(loc)
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.overrides:
                return f"--set {self.overrides[loc[:n]]}"
            if loc[:n] in self.lines:
                return f"{self.path or 'recipe'}, line {self.lines[loc[:n]]}"
        return str(self.path or "recipe")


def _validation_error(err: ValidationError, where: _Where, model: type[BaseModel], prefix: tuple = ()) -> NlpkitError:
    messages = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(model, tuple(e["loc"])[:-1])
            hint = did_you_mean(str(loc[-1]), valid)
            messages.append(f"{where(loc)}: unknown key '{key}'.{hint} Valid keys: {', '.join(valid)}")
        else:
            messages.append(f"{where(loc)}: '{key}': {e['msg']} (got {e.get('input')!r})")
    return NlpkitError("Invalid recipe:\n  " + "\n  ".join(messages))


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) schema at ``loc``, for did-you-mean suggestions."""
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        ann = getattr(info, "annotation", None)
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
    return list(model.model_fields)


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    if "=" not in item:
        raise NlpkitError(f"--set {item}: expected key.path=value, e.g. --set train.lr=3e-5")
    key, _, value = item.partition("=")
    return tuple(key.strip().split(".")), yaml.safe_load(value) if value.strip() else None


def apply_overrides(raw: dict, overrides: list[str]) -> dict[tuple, str]:
    """Set each ``key.path=value`` in ``raw`` (in place); returns {path: original text} for error messages."""
    origin: dict[tuple, str] = {}
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
        origin[path] = item
    return origin


def load_recipe(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> Recipe:
    """Read, override, validate and expand a recipe file; check every plugin name and model x task pair."""
    path = Path(path)
    if not path.exists():
        raise NlpkitError(f"Recipe not found: {path}")
    text = path.read_text(encoding="utf-8")
    return parse_recipe(text, path, overrides, registry)


def parse_recipe(
    text: str, path: Path | None = None, overrides: list[str] = (), registry: Registry | None = None
) -> Recipe:
    try:
        raw = yaml.safe_load(text) or {}
        lines = _line_map(text)
    except yaml.YAMLError as err:
        raise NlpkitError(f"{path or 'recipe'}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise NlpkitError(f"{path or 'recipe'}: a recipe is a mapping of keys (name, task, models, train, seeds)")
    origin = apply_overrides(raw, list(overrides))
    where = _Where(path, lines, origin)
    try:
        schema = RecipeSchema.model_validate(raw)
    except ValidationError as err:
        raise _validation_error(err, where, RecipeSchema) from None
    tasks = ([schema.task] if schema.task else []) + schema.tasks
    if not tasks:
        raise NlpkitError(f"{where(())}: the recipe names no task (add 'task: {{name: ..., dataset: ...}}')")
    if not schema.models:
        raise NlpkitError(f"{where(('models',))}: the recipe names no models")
    name = schema.name or (path.stem if path else "recipe")
    if registry is None:
        from nlpkit.plugins import registry as load

        registry = load()
    runs = expand(name, schema, tasks, registry, where)
    return Recipe(name=name, path=path, schema=schema, runs=runs, reports=Path(schema.reports) / name)


def expand(name: str, schema: RecipeSchema, tasks: list[TaskEntry], registry: Registry, where: _Where) -> list[RunSpec]:
    """Every task x model x seed, in recipe order; every name and pair checked before anything trains."""
    runs: list[RunSpec] = []
    problems: list[str] = []
    shared = schema.train.model_dump(exclude_unset=True)
    kinds = {registry.tasks[e.name].kind for e in tasks if e.name in registry.tasks}
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
            if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
                problems.append(f"{where(mloc + ('seeds',))}: 'models.{label}.seeds' must be a list of integers")
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
            train_values = {**shared, **{k: v for k, v in options.items() if k in train_keys}}
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
                            Path(schema.output))
                )
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
            messages.append(f"{where(loc)}: '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n  ".join(messages)


def resolved(spec: RunSpec) -> dict[str, Any]:
    return copy.deepcopy(spec.to_dict())
