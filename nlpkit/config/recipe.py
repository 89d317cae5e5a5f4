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

This module holds the schema (the ``train:`` part is :class:`nlpkit.train.options.TrainOptions`), RunSpec and
loading; reading the YAML with its lines is ``yaml_lines``, ``--set`` is ``overrides``, the runs are ``expand``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from nlpkit.config.overrides import apply_overrides, shadowed_overrides
from nlpkit.config.yaml_lines import _validation_error, _Where, load_yaml
from nlpkit.errors import NlpkitError
from nlpkit.plugins import Registry
from nlpkit.train.options import TrainOptions

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


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PlainName = Field(description="The task plugin, e.g. classification, ner, translation (`nlpkit plugins` "
                            "lists them).")
    id: PlainName | None = Field(None, description="This entry's own name, for its runs (<id>-<model>-seed<n>) and "
                                 "its report section; default: the task's. Give each entry one when a recipe runs "
                                 "one task on several data sets.")
    dataset: PlainName = Field(description="The dataset plugin, e.g. ag_news, conll2003, multi30k; its records must "
                               "have the task's kind.")
    data_dir: str | None = Field(None, min_length=1, description="Folder holding the dataset's files; default: "
                                 "$NLPKIT_DATA/<dataset> when that exists.")
    dataset_options: dict[str, Any] = Field({}, description="The dataset plugin's options (`nlpkit plugins "
                                            "--options DATASET`).")
    options: dict[str, Any] = Field({}, description="The task plugin's options (`nlpkit plugins --options TASK`).")

    @property
    def key(self) -> str:
        """What this entry's runs are named by: its ``id``, else its task's name."""
        return self.id or self.name


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
    sweep: dict[str, Any] | None = Field(None, description="A hyperparameter search over this recipe's settings "
                                         "(nlpkit.sweep validates it); the recipe's own runs are unchanged by it.")
    track: list[str] = Field([], description="Experiment trackers that follow every run, e.g. [tensorboard, "
                             "mlflow] (`nlpkit plugins` lists them; `nlpkit run --track` overrides). Not a setting: "
                             "it leaves the settings hash, and so finished runs, alone.")


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
    # False for a sweep's trials: the test split is neither loaded nor predicted (selection sees validation only).
    # Not a setting of the run (not in to_dict, not in its settings hash).
    test_split: bool = field(default=True, kw_only=True)
    # the trackers that follow the run: how it is watched, not what it computes, so not in to_dict() (nor in the
    # settings hash or recipe.yaml); it travels with the spec to the run's own process
    track: list[str] = field(default_factory=list, kw_only=True)

    @property
    def name(self) -> str:
        return f"{self.task.key}-{self.label}-seed{self.seed}"

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
# Settings added after runs were made, at the value that computes what those runs computed: left out of the
# identity at that value, so adding an option does not orphan every finished run.
ADDED_LATER = {"train.min_steps": None, "task.id": None}


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
    kept = {k: v for k, v in flat.items() if k not in COSMETIC and k not in ("seed", "recipe", "settings_hash")
            and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Recipe:
    name: str
    path: Path | None
    schema: RecipeSchema
    runs: list[RunSpec]
    reports: Path
    warnings: list[str] = field(default_factory=list)  # said before running: e.g. a --set that changes nothing
    where: _Where | None = None  # says which file and line (or --set) a key path came from (e.g. for the sweep block)


# --- reading ------------------------------------------------------------------------------------


# --- reading ------------------------------------------------------------------------------------


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
    from nlpkit.config.expand import expand  # it builds RunSpecs: imported here, after this module

    runs = expand(name, schema, tasks, registry, where)
    reports = Path(schema.reports) / name
    for folder, base in [(spec.folder, spec.output) for spec in runs] + [(reports, Path(schema.reports))]:
        _inside(folder, base)
    return Recipe(name=name, path=path, schema=schema, runs=runs, reports=reports,
                  warnings=shadowed_overrides(origin, schema), where=where)


def _inside(folder: Path, base: Path) -> None:
    """The last guard of the rule that a recipe writes only below its output and report folders (plain
    names already ensure it; this keeps it true whatever builds a path)."""
    resolved, root = Path(folder).resolve(), Path(base).resolve()
    if resolved == root or root not in resolved.parents:
        raise NlpkitError(f"{folder} would be written outside {base}: names in a recipe must be plain names")


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


def resolved(spec: RunSpec) -> dict[str, Any]:
    return copy.deepcopy(spec.to_dict())
