"""What a plugin implements: the base classes Model, Task and Dataset, and the data passed between them.

The engine never looks inside an example; it moves them between the three kinds of plugin:

    Dataset.load(split) -> raw records          (label names as strings)
    Task.prepare(splits) -> examples, TaskSpec  (label ids; the spec names the task kind and labels)
    Model.create(spec, options, train) -> model (fits its own vocabulary on the training split)
    Model.encode(example) -> features           (once per example, cached by the engine)
    Model.collate(features) -> batch            (tensors; padded)
    Model.forward(batch) -> Output(loss=...)    (training)
    Model.predict(batch) -> [{"prediction": ...}, ...]
    Task.metrics(examples, predictions) -> {"accuracy": 0.93, ...}

Examples, per task kind (a task kind is the shape of the data; several tasks may share one):

    classification  {"text": str, "label": int}
    tagging         {"tokens": list[str], "tags": list[int]}
    seq2seq         {"source": str, "target": str}

Predictions use the same shapes: an int label, a list of tag ids (one per token), a string.
Gold fields may be missing in examples given to ``encode`` at prediction time.

:class:`RunContext` is what the lifecycle hooks (nlpkit/hookspecs.py) are told about a run; a :class:`Tracker`
follows one run for an experiment tracker (TensorBoard, MLflow, ...).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_model, save_model
from torch import nn

from nlpkit.files import atomic_write_text

TASK_KINDS = ("classification", "tagging", "seq2seq")


class Options(BaseModel):
    """Base for a plugin's typed options; recipe keys are validated against its fields."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class TaskSpec:
    """What a model needs to know about the task it is built for."""

    kind: str
    labels: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Output:
    """What ``Model.forward`` returns. ``loss`` is the mean loss over the batch's targets."""

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    attentions: torch.Tensor | None = None


class Unsupported(Exception):
    """Raised by a plugin asked for something it does not serve; the message says why."""


class Model(nn.Module):
    """A model plugin. One registered class may serve several task kinds: ``create``/``load`` may return an
    instance of a per-kind subclass (e.g. the ``lstm`` plugin returns its tagger for a tagging spec)."""

    name: ClassVar[str]
    serves: ClassVar[tuple[str, ...]] = ()
    why_not: ClassVar[dict[str, str]] = {}  # task kind -> reason it is not served, for error messages
    Options: ClassVar[type[Options]] = Options
    prefers_fp32_on_cpu: ClassVar[bool] = False  # e.g. step-by-step recurrent decoders: bf16 is slower there
    # collate() entries the loop leaves on the CPU when training on a GPU (e.g. lengths for pack_padded_sequence,
    # which wants them there: moving them back inside the step would make the CPU wait for the GPU)
    host_inputs: ClassVar[tuple[str, ...]] = ()
    # Training options this model trains well with where a recipe sets none (the recipe's ``train:`` block and the
    # model entry win), by task kind, "*" for every kind: a pretrained encoder fine-tunes at lr 2e-5, a recurrent
    # model from scratch learns at 3e-3, and no one global default serves both (issue #23). A default length
    # (min_steps, early_stopping: a budget in optimizer steps that scales with small data) applies only where the
    # recipe sets no length of its own (epochs, max_steps, min_steps).
    train_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def train_defaults_for(cls, kind: str) -> dict[str, Any]:
        return {**cls.train_defaults.get("*", {}), **cls.train_defaults.get(kind, {})}

    # A plugin may hand task kinds to other classes ("module:Class", imported only when a run needs it);
    # its create()/load() ask kind_class() first. Read from the plugin class itself, not its subclasses.
    per_kind: ClassVar[dict[str, str]] = {}

    @classmethod
    def kind_class(cls, kind: str) -> type[Model] | None:
        target = cls.__dict__.get("per_kind", {}).get(kind)
        if target is None:
            return None
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)

    # The options a recipe may set per task kind (each a narrower class than ``Options``); kinds not named use
    # ``Options``. A subclass that declares its own ``Options`` but no table of its own drops the inherited table.
    kind_options: ClassVar[dict[str, type[Options]]] = {}

    @classmethod
    def options_for(cls, kind: str) -> type[Options]:
        """The options a recipe may set for this model on a task of ``kind``: the recipe is checked against this
        class when it is loaded, so a key that does not apply to the kind (e.g. a decoder's ``beam_size`` for
        classification) is an error, not silently ignored; ``nlpkit plugins --options`` lists it per kind.
        ``create``/``load`` still receive ``cls.Options``, which must accept every kind's options.
        Whichever the class declared last, ``kind_options`` or ``Options``, decides."""
        for klass in cls.__mro__:
            if "kind_options" in vars(klass):
                return vars(klass)["kind_options"].get(kind, cls.Options)
            if "Options" in vars(klass):
                return cls.Options
        return cls.Options

    def __init__(self, spec: TaskSpec, options: Options):
        super().__init__()
        self.spec = spec
        self.options = options

    # --- building and persistence -------------------------------------------------------
    @classmethod
    def create(cls, spec: TaskSpec, options: Options, train: list[dict]) -> Model:
        """Build a fresh model for ``spec``, fitting any vocabulary on the training examples."""
        raise NotImplementedError

    # The default persistence: ``config.json`` ({"plugin": name, "spec": ..., "options": ...}), the files
    # ``save_files`` adds (vocabularies, tokenizers) and the weights as ``model.safetensors``. A model overrides
    # ``save_files``/``from_files`` (and ``after_load``), or ``save``/``load`` for a format of its own.
    def save(self, folder: Path) -> None:
        """Write everything ``load`` needs: config, weights (safetensors), tokenizer files."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"plugin": self.name, "spec": self.spec.to_dict(), "options": self.options.model_dump()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        self.save_files(folder)
        save_model(self, str(folder / "model.safetensors"))

    def save_files(self, folder: Path) -> None:
        """Write what ``from_files`` reads beside the config and the weights (e.g. tokenizers). Default: nothing."""

    @classmethod
    def load(cls, folder: Path, options_cls: type[Options] | None = None) -> Model:
        """The model ``save`` wrote to ``folder``. A task kind in ``per_kind`` is loaded by its class (given this
        class's ``Options``); else the model is built by ``from_files`` with ``options_cls`` (default ``Options``),
        its weights are loaded (strictly: every one, with its shape) and ``after_load`` is called."""
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        impl = cls.kind_class(config["spec"]["kind"])
        if impl is not None:
            return impl.load(folder, cls.Options)
        model = cls.from_files(folder, TaskSpec(**config["spec"]), (options_cls or cls.Options)(**config["options"]))
        load_model(model, str(folder / "model.safetensors"))
        model.after_load()
        return model

    @classmethod
    def from_files(cls, folder: Path, spec: TaskSpec, options: Options) -> Model:
        """A model to load saved weights into, built from the files ``save_files`` wrote (for the default ``load``)."""
        raise NotImplementedError

    def after_load(self) -> None:
        """Called by the default ``load`` once the weights are in (e.g. to convert to the layout wanted here)."""

    # --- data ---------------------------------------------------------------------------
    def encode(self, example: dict) -> dict[str, Any]:
        """Turn one example into features (lists of ints). Must set ``length`` (tokens, for batching and
        token budgets); may set ``n_tokens`` (what tokens/s counts, e.g. target tokens; default ``length``)."""
        raise NotImplementedError

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad a list of features into a batch of tensors."""
        raise NotImplementedError

    # --- computation --------------------------------------------------------------------
    def forward(self, **batch: torch.Tensor) -> Output:  # type: ignore[override]
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One dict per example with key ``prediction`` (task-native form) and optional extras."""
        raise NotImplementedError

    def prepare_inference(self, final: bool) -> None:
        """Told by the engine before it predicts: ``final=False`` for validation during training (cheap settings,
        e.g. greedy decoding), ``final=True`` for the test split and ``nlpkit predict`` (the recipe's test-time
        settings, e.g. beam search). Decoding settings reach a model only this way, never as a side effect of
        loading weights. Default: nothing to change."""

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer | None:
        """A model's own optimizer (a ``torch.optim.Optimizer``, so the scheduler and checkpoints work), e.g. one
        that updates only the embedding rows seen so far; None (the default): AdamW over ``param_groups``."""
        return None

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; override to give parts of the model their own learning rate."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        return [
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]


class Task:
    """A task plugin: turns dataset records into examples, scores predictions, shows them to people."""

    name: ClassVar[str]
    kind: ClassVar[str]  # one of TASK_KINDS
    main_metric: ClassVar[str]
    greater_is_better: ClassVar[bool] = True
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None, spec: TaskSpec | None = None):
        self.options = options if options is not None else self.Options()
        self.spec = spec

    def prepare(self, splits: dict[str, list[dict]], labels: list[str] | None = None) -> dict[str, list[dict]]:
        """Convert raw records per split into examples; sets ``self.spec`` from the training split.

        ``labels`` is the dataset's own label order when it has one. A record may carry ``where``
        ("file, line N") so errors about it can say where it came from."""
        raise NotImplementedError

    def metrics(self, examples: list[dict], predictions: list[dict]) -> dict[str, Any]:
        """Scalar metrics (including ``main_metric``); may add ``details`` (non-scalar, e.g. a confusion matrix)."""
        raise NotImplementedError

    def record(self, index: int, example: dict, prediction: dict) -> dict:
        """One line of predictions.jsonl, in human terms (label names, tag names, text)."""
        raise NotImplementedError

    def parse(self, text: str) -> dict:
        """Turn raw user input (``nlpkit predict``) into an example without gold fields."""
        raise NotImplementedError

    def render(self, example: dict, prediction: dict) -> str:
        """A prediction as a person wants to read it."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        spec = self.spec.to_dict() if self.spec else None
        return {"task": self.name, "options": self.options.model_dump(), "spec": spec}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Task:
        return cls(cls.Options(**state["options"]), TaskSpec(**state["spec"]))


class Dataset:
    """A dataset plugin: reads one split as a list of raw records in its task kind's shape,
    with labels/tags as strings (the task maps them to ids)."""

    name: ClassVar[str]
    kind: ClassVar[str]  # the task kind its records have the shape of, e.g. "classification"
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None, data_dir: Path | None = None):
        self.options = options if options is not None else self.Options()
        self.data_dir = data_dir  # the local folder holding this dataset, if any

    def load(self, split: str) -> list[dict]:
        raise NotImplementedError

    def labels(self) -> list[str] | None:
        """The label names in their canonical order, if the dataset defines one."""
        return None


@dataclass
class RunContext:
    """One run as the lifecycle hooks see it (see nlpkit/hookspecs.py): what it is, where it writes, and a way
    to stop it. The same object is passed to every hook of the run, so a plugin may keep state on it in
    ``extra``."""

    settings: dict[str, Any]  # the resolved run, as its recipe.yaml holds it (task entry, model, train, seed...)
    folder: Path  # the run folder
    name: str  # <task>-<model entry>-seed<k>
    task: str
    task_kind: str  # one of TASK_KINDS
    dataset: str
    model: str  # the model entry's name in the recipe (usually its plugin's)
    plugin: str  # the model plugin
    seed: int
    main_metric: str
    greater_is_better: bool
    is_main_process: bool = True
    trackers: tuple[str, ...] = ()  # the trackers the run asked for (``track:`` / ``--track``), see :class:`Tracker`
    resume_step: int = 0  # the checkpoint step the run resumes from (0: it starts from scratch)
    stop_reason: str | None = None  # set by stop()
    extra: dict[str, Any] = field(default_factory=dict)  # for plugins' own state

    def stop(self, reason: str = "stopped by a plugin") -> None:
        """End training after the current evaluation (the best weights so far are kept and tested as usual);
        results.json records ``stopped_early: reason``. Called again, the first reason stays."""
        if self.stop_reason is None:
            self.stop_reason = str(reason) or "stopped by a plugin"


class Tracker:
    """A tracker plugin: sends one run to an experiment tracker (TensorBoard, MLflow, W&B, ...).

    A run that asks for it (``track: [name]`` or ``nlpkit run --track name``) gets one instance, built with its
    :class:`RunContext` (in the ``nlpkit run`` process for the runs it starts, else in the run's main process,
    see nlpkit.track.host), and nlpkit's tracking driver (nlpkit/track/hooks.py) calls, in
    this order: ``start``, ``log_settings``, ``log_scalars`` (at every log step and evaluation; ``checkpoint``
    after each checkpoint), ``log_results``, ``log_artifacts`` (a finished run only), ``end``. A method that
    raises is reported once and the tracker is switched off for the rest of the run: tracking never fails a
    run. What it must keep between a run's attempts (e.g. an id to resume) goes in the run folder
    (``nlpkit.track.state``)."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules it needs: checked before any run starts
    install_hint: ClassVar[str] = "pip install -e '.[track]'"  # said when one of them is missing

    def __init__(self, run: RunContext):
        self.run = run

    def start(self, resume_step: int) -> None:
        """The run begins. ``resume_step`` 0: from scratch; else it resumes from the checkpoint of that step and
        logs every step after it again, some of which the interrupted attempt may have logged already: they must
        not appear twice (and none may go missing)."""

    def log_settings(self, settings: dict[str, Any]) -> None:
        """The resolved run (its recipe.yaml: task, model, model_options, train, seed...), nested."""

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars at optimizer step ``step``, named by split: ``train/loss``, ``train/lr``, ``validation/accuracy``."""

    def checkpoint(self, step: int) -> None:
        """A resumable checkpoint of ``step`` is on disk: write out what is buffered, so that a crash after it
        loses no point up to ``step`` (the resumed run logs only the steps after it)."""

    def log_results(self, results: dict[str, Any]) -> None:
        """The run's results (what results.json will hold: test metrics, timings, provenance)."""

    def log_artifacts(self, files: dict[str, Path]) -> None:
        """Files and folders of the finished run worth keeping with it, by name (``model``, ``results.json``)."""

    def end(self, status: str) -> None:
        """The run ended: "finished", "failed" or "interrupted" (it resumes when run again)."""

    @classmethod
    def attach(cls, folder: Path, files: dict[str, Path]) -> None:
        """After the recipe's runs, from the ``nlpkit run`` process: add the comparison report's files (figures,
        summary) to the tracked record of the finished run in ``folder``. Default: nothing to add them to."""


def save_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False))


# --- launchers: where a recipe's runs are carried out (nlpkit run --launcher NAME) -----------------------------


@dataclass
class RunOutcome:
    """What became of one launched run, as its folder says (see ``nlpkit.run.folders.run_status``)."""

    name: str  # the run's id: <task>-<model entry>-seed<k>
    status: str  # "finished" | "failed" | "interrupted" (a checkpoint: it resumes) | "skipped" (not run)
    results: dict[str, Any] | None = None  # results.json of a finished run
    error: str = ""  # why it failed, was interrupted or skipped
    signum: int = 0  # the signal that interrupted it


class Launcher:
    """A launcher plugin: carries out the runs ``nlpkit run`` hands it (in local processes, on a Slurm or a Ray
    cluster, ...) and says what became of each. It only needs "run this RunSpec" (``nlpkit.launch.job.run_one``
    does one run in whatever process it is called in) and "what happened" (read back from the run folder, so a
    launcher never has to carry results over its own channels).

    ``Options`` are the launcher's typed options (``nlpkit run --launcher NAME --launcher-options k=v,k=v``)."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    extra: ClassVar[str | None] = None  # the pip extra its libraries come with, for the "not installed" message

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    def launch(self, runs: list[tuple[int, Any]], total: int, restart: bool, say: Any) -> list[RunOutcome]:
        """Carry out ``runs`` ((position in the recipe, nlpkit.config.recipe.RunSpec) pairs, ``total`` runs in
        the recipe, for "[i/total]" lines) and return one outcome per run. ``restart``: start unfinished runs
        over instead of resuming them. ``say(line)`` reports progress on the command line."""
        raise NotImplementedError
