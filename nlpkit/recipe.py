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
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from nlpkit.contract import Options
from nlpkit.errors import NlpkitError, did_you_mean
from nlpkit.plugins import Registry

# Names that become parts of paths (the recipe's name, model entry labels, task and dataset names) must be
# plain names, so that no recipe can write outside its output and report folders: no separators, no "..",
# nothing absolute, nothing hidden.
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter, digit or '_', at most 100 characters"
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def plain_name(value: str) -> str:
    """``value`` if it is safe as one path component (see ``NAME_RULE``), else a ValueError that says why."""
    if not isinstance(value, str) or not _PLAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain name: use {NAME_RULE} (it becomes a folder name)")
    return value


PlainName = Annotated[str, AfterValidator(plain_name)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)]  # numpy's seed range; strict: no bools
SeedList = Annotated[list[Seed], Field(min_length=1)]


def _distinct(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat ({seeds}): two runs would share one folder")
    return seeds


Seeds = Annotated[SeedList, AfterValidator(_distinct)]
_SEEDS = TypeAdapter(Seeds)


def _positive(default: float, description: str) -> Any:
    return Field(default, gt=0, allow_inf_nan=False, description=description)


class TrainOptions(Options):
    """The one shared training recipe; any model entry may override any of these. Every field's range is
    checked when the recipe is read, before any run folder exists."""

    epochs: float = _positive(3, "Passes over the training split (a fraction trains part of one); > 0.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides "
                                  "epochs); >= 1, or null for no limit.")
    batch_size: int = Field(32, ge=1, description="Training examples per batch (per process); >= 1.")
    max_tokens: int | None = Field(None, ge=1, description="Token budget per batch (padded tokens) instead of a "
                                   "fixed batch size; >= 1, or null to batch by batch_size.")
    eval_batch_size: int | None = Field(None, ge=1, description="Examples per batch when evaluating; >= 1, or null "
                                        "for 2 x batch_size.")
    lr: float = _positive(1e-3, "Peak learning rate of AdamW (reached after warmup, then decayed linearly); > 0.")
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False, description="AdamW weight decay; >= 0.")
    warmup: float = Field(0.06, ge=0, lt=1, allow_inf_nan=False, description="Fraction of the training steps spent "
                          "warming the learning rate up from 0; in [0, 1).")
    grad_clip: float | None = Field(1.0, gt=0, allow_inf_nan=False, description="Largest gradient norm (gradients "
                                    "are scaled down to it); > 0, or null for no clipping.")
    grad_accum: int = Field(1, ge=1, description="Batches whose gradients are summed per optimizer step; >= 1.")
    eval_every: int | None = Field(None, ge=1, description="Evaluate on the validation split every N optimizer "
                                   "steps; >= 1, or null for once per epoch.")
    log_every: int = Field(50, ge=1, description="Log the training loss every N optimizer steps; >= 1.")
    early_stopping: int | None = Field(None, ge=1, description="Stop after N evaluations without improvement; >= 1, "
                                       "or null to train the full budget.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Arithmetic precision: auto (bf16 or fp16 where the device runs it fast, else fp32), "
        "fp32, bf16 or fp16.")
    device: str = Field("auto", min_length=1, description="Where to train: auto (a GPU when there is one), cpu, "
                        "cuda, cuda:N or mps.")
    checkpoint_every: int | None = Field(None, ge=1, description="Optimizer steps between resumable checkpoints; "
                                         ">= 1, or null for none (a stop signal still writes one).")
    keep_checkpoints: int = Field(2, ge=1, description="How many of the newest checkpoints to keep; >= 1.")
    max_train_examples: int | None = Field(None, ge=1, description="Train on N examples: a sample drawn with the "
                                           "run's seed (see subset); >= 1, or null for all.")
    max_eval_examples: int | None = Field(None, ge=1, description="Validate on N examples (one fixed sample for "
                                          "every run); the test split is untouched; >= 1, or null for all.")
    max_test_examples: int | None = Field(None, ge=1, description="Test on N examples (one fixed sample for every "
                                          "run; results.json says so); >= 1, or null for all.")
    subset: Literal["random", "head"] = Field("random", description="How max_*_examples choose: random (seeded) "
                                              "or head (the first N in file order).")
    progress: bool = Field(True, description="Show a progress bar while training: true or false.")
    threads: int | None = Field(None, ge=1, description="CPU threads for this run (torch.set_num_threads); >= 1, or "
                                "null for torch's default (cores / --jobs under --jobs).")

    @field_validator("device")
    @classmethod
    def _device_is_here(cls, value: str) -> str:
        """A device that is not on this machine stops the recipe before anything is created (never a CPU run)."""
        from nlpkit.hardware import device_problem

        problem = device_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PlainName = Field(description="The task plugin, e.g. classification, ner, translation (`nlpkit plugins` "
                            "lists them).")
    dataset: PlainName = Field(description="The dataset plugin, e.g. ag_news, conll2003, multi30k; its records must "
                               "have the task's kind.")
    data_dir: str | None = Field(None, min_length=1, description="Folder holding the dataset's files; default: "
                                 "$NLPKIT_DATA/<dataset> when that exists.")
    dataset_options: dict[str, Any] = Field({}, description="The dataset plugin's options (`nlpkit plugins "
                                            "--options DATASET`).")
    options: dict[str, Any] = Field({}, description="The task plugin's options (`nlpkit plugins --options TASK`).")


class RecipeSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PlainName | None = Field(None, description="The recipe's name: runs go to <output>/<name>/, reports to "
                                   "<reports>/<name>/; default: the file's stem.")
    output: str = Field("runs", min_length=1, description="Folder for run folders.")
    reports: str = Field("reports", min_length=1, description="Folder for reports.")
    task: TaskEntry | None = None
    tasks: list[TaskEntry] = []
    models: dict[PlainName, dict[str, Any] | None]
    train: TrainOptions = TrainOptions()
    seeds: Seeds = [1]


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
    kept = {k: v for k, v in flat.items() if k not in COSMETIC and k not in ("seed", "recipe", "settings_hash")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Recipe:
    name: str
    path: Path | None
    schema: RecipeSchema
    runs: list[RunSpec]
    reports: Path
    warnings: list[str] = field(default_factory=list)  # said before running: e.g. a --set that changes nothing


# --- reading ------------------------------------------------------------------------------------


MAX_VALUES = 100_000  # values a recipe may hold once its aliases are expanded (real recipes: a few hundred)


def _where_node(label: str, node: yaml.Node) -> str:
    return f"{label}, line {node.start_mark.line + 1}"


def _expanded_size(root: yaml.Node, label: str) -> None:
    """Refuse a document whose aliases expand to more than ``MAX_VALUES`` values ("billion laughs") or refer
    to themselves, counting each node once (memoized), so the check costs the size of the text, not of the
    expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise NlpkitError(f"{_where_node(label, node)}: an alias refers to a value that contains it "
                              "(a recursive alias); write the value out instead")
        open_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        open_nodes.discard(id(node))
        if total > MAX_VALUES:
            raise NlpkitError(f"{_where_node(label, node)}: aliases expand this value to more than {MAX_VALUES:,} "
                              "values (nested aliases); a recipe needs far fewer: write the values out")
        sizes[id(node)] = total
        return total

    size(root)


def _line_map(root: yaml.Node | None, label: str) -> dict[tuple, int]:
    """Map each key path of the composed document to its 1-based line number, and refuse a key given twice in
    one mapping (YAML would silently keep the last). Each node is walked once: a path reached through an
    alias is placed at the alias's key by :class:`_Where`'s prefix lookup."""
    lines: dict[tuple, int] = {}
    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":  # merge keys may repeat
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    shown = ".".join(str(p) for p in path + (key.value,))
                    raise NlpkitError(f"{label}, line {line}: key '{shown}' is given twice (lines {first[key.value]} "
                                      f"and {line}); keep one")
                first[key.value] = line
                lines[path + (key.value,)] = line
                walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader (no Python tags), composed once so that aliases can be bounded before anything is
    constructed."""


def load_yaml(text: str, label: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML ``text`` (from ``label``: a file or ``--set ...``): (value, {key path: line}). Bad YAML,
    alias bombs, recursive aliases, repeated keys and absurd nesting are NlpkitErrors naming ``label``."""
    loader = None
    try:
        loader = _Loader(text)  # refuses control characters here
        root = loader.get_single_node()
        if root is None:
            return None, {}
        _expanded_size(root, label)
        lines = _line_map(root, label)
        return loader.construct_document(root), lines
    except yaml.YAMLError as err:
        detail = str(err).replace('in "<unicode string>", ', "")
        raise NlpkitError(f"{label}: not valid YAML: {detail}") from None
    except RecursionError:
        raise NlpkitError(f"{label}: values nested too deeply to be a recipe") from None
    finally:
        if loader is not None:
            loader.dispose()


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
        loc = prefix + tuple(p for p in e["loc"] if p != "[key]")  # a mapping's key itself (e.g. a model label)
        e["msg"] = e["msg"].removeprefix("Value error, ")
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(model, tuple(e["loc"])[:-1])
            hint = did_you_mean(str(loc[-1]), valid)
            messages.append(f"{where(loc)}: unknown key '{key}'.{hint} Valid keys: {', '.join(valid)}")
        else:
            messages.append(f"{where(loc)}: '{key}': {e['msg']} (got {reprlib.repr(e.get('input'))})")
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
    """``key.path=value`` -> (("key", "path"), value parsed as YAML); anything malformed blamed on the ``--set``."""
    if "=" not in item:
        raise NlpkitError(f"--set {item}: expected key.path=value, e.g. --set train.lr=3e-5")
    key, _, value = item.partition("=")
    path = tuple(part.strip() for part in key.strip().split("."))
    if not all(path):
        raise NlpkitError(f"--set {item}: '{key}' is not a key path (names joined by dots, e.g. train.lr)")
    return path, load_yaml(value, f"--set {item}")[0] if value.strip() else None


def apply_overrides(raw: dict, overrides: list[str]) -> dict[tuple, str]:
    """Set each ``key.path=value`` in ``raw`` (in place); returns {path: original text} for error messages,
    for the set path and every mapping the override had to create, so that an error about a key that exists
    only because of a ``--set`` is blamed on that ``--set``."""
    origin: dict[tuple, str] = {}
    for item in overrides:
        path, value = parse_override(item)
        node: Any = raw
        for depth, part in enumerate(path[:-1]):
            here = path[: depth + 1]
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                node[part] = child = {}
                origin.setdefault(here, item)
            elif not isinstance(child, dict):
                raise NlpkitError(f"--set {item}: '{'.'.join(here)}' holds {type(child).__name__} "
                                  f"{child!r}, not keys, so it has no '{path[depth + 1]}'")
            node = child
        node[path[-1]] = value
        origin[path] = item
    return origin


def load_recipe(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> Recipe:
    """Read, override, validate and expand a recipe file; check every plugin name and model x task pair."""
    path = Path(path)
    if not path.exists():
        raise NlpkitError(f"Recipe not found: {path}")
    if not path.is_file():
        raise NlpkitError(f"{path}: not a recipe file (a folder?)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise NlpkitError(f"{path}: cannot read the recipe: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise NlpkitError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                          "a recipe is a YAML text file saved as UTF-8") from None
    return parse_recipe(text, path, overrides, registry)


def parse_recipe(
    text: str, path: Path | None = None, overrides: list[str] = (), registry: Registry | None = None
) -> Recipe:
    raw, lines = load_yaml(text, str(path or "recipe"))
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise NlpkitError(f"{path or 'recipe'}: a recipe is a mapping of keys (name, task, models, train, seeds)")
    if is_resolved_run(raw):
        raw = one_run_recipe(raw)
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
    try:
        plain_name(name)
    except ValueError as err:
        raise NlpkitError(f"{path}: the recipe has no 'name' and its file name cannot be one: {err}; "
                          "add a 'name:' key") from None
    if registry is None:
        from nlpkit.plugins import registry as load

        registry = load()
    runs = expand(name, schema, tasks, registry, where)
    reports = Path(schema.reports) / name
    for folder, base in [(spec.folder, spec.output) for spec in runs] + [(reports, Path(schema.reports))]:
        _inside(folder, base)
    return Recipe(name=name, path=path, schema=schema, runs=runs, reports=reports,
                  warnings=shadowed_overrides(origin, schema))


def _inside(folder: Path, base: Path) -> None:
    """The last guard of the rule that a recipe writes only below its output and report folders (plain
    names already ensure it; this keeps it true whatever builds a path)."""
    resolved, root = Path(folder).resolve(), Path(base).resolve()
    if resolved == root or root not in resolved.parents:
        raise NlpkitError(f"{folder} would be written outside {base}: names in a recipe must be plain names")


def shadowed_overrides(origin: dict[tuple, str], schema: RecipeSchema) -> list[str]:
    """``--set train.KEY=...`` where model entries set KEY themselves: their own value wins, so for them the
    override changes nothing; say so rather than let a comparison silently run with the old value."""
    warnings = []
    for path, item in origin.items():
        if len(path) != 2 or path[0] != "train" or path[1] not in TrainOptions.model_fields:
            continue
        own = [label for label, options in schema.models.items() if options and path[1] in options]
        if not own:
            continue
        effect = "changes nothing" if len(own) == len(schema.models) else "does not reach them"
        who = f"model entries {', '.join(own)} set" if len(own) > 1 else f"model entry {own[0]} sets"
        warnings.append(f"--set {item} {effect}: {who} {path[1]} in the recipe, which wins over train.{path[1]}; "
                        f"set it per entry with --set models.<entry>.{path[1]}=...")
    return warnings


RESOLVED_KEYS = {"recipe", "task", "label", "model", "model_options", "train", "seed"}


def is_resolved_run(raw: dict) -> bool:
    """Whether a YAML document is a run folder's recipe.yaml (one resolved run) rather than a recipe."""
    return RESOLVED_KEYS <= set(raw) and "models" not in raw


def one_run_recipe(resolved: dict[str, Any]) -> dict[str, Any]:
    """The recipe that makes exactly the run a run folder's recipe.yaml describes (same settings, same seed,
    same recipe name): ``nlpkit run <run folder>/recipe.yaml`` re-makes that run."""
    entry = {"model": resolved["model"], **(resolved.get("model_options") or {}), **(resolved.get("train") or {})}
    return {"name": resolved["recipe"], "task": resolved["task"], "models": {resolved["label"]: entry},
            "seeds": [resolved["seed"]]}


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
            messages.append(f"{where(loc)}: '{key}': {e['msg']} (got {reprlib.repr(e.get('input'))})")
    return "\n  ".join(messages)


def resolved(spec: RunSpec) -> dict[str, Any]:
    return copy.deepcopy(spec.to_dict())
