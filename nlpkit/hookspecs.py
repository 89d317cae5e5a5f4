"""The plugin contract: the hooks a plugin implements to add models, tasks and datasets.

A plugin is a module named by an entry point in the ``nlpkit`` group. It implements any of the
hooks below with ``@nlpkit.hookimpl`` and calls ``register`` once per class it adds:

    @nlpkit.hookimpl
    def register_models(register):
        register(MyModel)

The classes themselves subclass :class:`nlpkit.Model`, :class:`nlpkit.Task` or
:class:`nlpkit.Dataset` (see ``nlpkit/contract.py`` for what each must provide).

Lifecycle hooks (``on_run_start``, ``on_log``, ``on_evaluate``, ``on_checkpoint``, ``on_results``,
``on_run_end``) let a plugin follow every run (tracking), stop it early (sweeps) or launch around it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # for the annotations only: the contract is a sibling, not a layer below
    from nlpkit.contract import RunContext

hookspec = pluggy.HookspecMarker("nlpkit")
hookimpl = pluggy.HookimplMarker("nlpkit")


@hookspec
def register_models(register: Callable[[type], None]) -> None:
    """Register model classes (subclasses of nlpkit.Model)."""


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Register task classes (subclasses of nlpkit.Task)."""


@hookspec
def register_datasets(register: Callable[[type], None]) -> None:
    """Register dataset classes (subclasses of nlpkit.Dataset)."""


@hookspec
def register_trackers(register: Callable[[type], None]) -> None:
    """Register experiment trackers (subclasses of nlpkit.Tracker), used by runs that name them in ``track:``."""


@hookspec
def register_metrics(register: Callable[[str, Callable[[list[dict], list[dict]], float]], None]) -> None:
    """Register metrics: ``register("name", fn)`` with ``fn(examples, predictions) -> float`` (examples and
    predictions in the task kind's shapes, see nlpkit/contract.py). A task asks for them by name (e.g. a
    ``metrics`` task option) through ``nlpkit.plugins.registry().metric(name)``."""


@hookspec
def register_launchers(register: Callable[[type], None]) -> None:
    """Register launcher classes (subclasses of nlpkit.contract.Launcher): where ``nlpkit run --launcher NAME``
    carries out a recipe's runs (local processes, Slurm, Ray, ...)."""


@hookspec
def report_sections(task: str, runs: list[dict[str, Any]], out_dir: str) -> list[dict[str, Any]] | None:
    """Add sections to a comparison report: called once per task with that task's finished runs.

    Return a list of ``{"title": str, "markdown": str, "figures": [png paths]}`` (or None).
    """


# --- lifecycle hooks: what tracking, sweeps and launchers build on ------------------------------------------------
# Called on the main process only (under DDP, torchrun or --jobs each run's hooks fire once), with ``run`` a
# nlpkit.contract.RunContext. A hook that raises fails the run, as any error of the run would.


@hookspec
def on_run_start(run: RunContext) -> None:
    """A run begins: its data is about to be loaded (a resumed run starts here too)."""


@hookspec
def on_log(run: RunContext, step: int, metrics: dict[str, Any]) -> None:
    """The training loop logged ``metrics`` (loss, lr, epoch, examples_per_s) at optimizer step ``step``."""


@hookspec
def on_evaluate(run: RunContext, step: int, metrics: dict[str, Any]) -> None:
    """The validation split was evaluated at ``step`` (scalar metrics, the task's main metric among them).
    ``run.stop(reason)`` here ends training after this evaluation."""


@hookspec
def on_checkpoint(run: RunContext, step: int, folder: Path) -> None:
    """A resumable checkpoint of ``step`` was written to ``folder`` (the run's checkpoints folder)."""


@hookspec
def on_results(run: RunContext, results: dict[str, Any]) -> None:
    """The run's results, before results.json is written: a hook may add keys (change the others at your peril)."""


@hookspec
def on_run_end(run: RunContext, status: str, error: BaseException | None) -> None:
    """The run ended: ``status`` is "finished", "failed" (``error`` says why) or "interrupted" (a signal: it
    wrote a checkpoint and resumes when run again)."""
