"""The plugin contract: the hooks a plugin implements to add models, tasks and datasets.

A plugin is a module named by an entry point in the ``nlpkit`` group. It implements any of the
hooks below with ``@nlpkit.hookimpl`` and calls ``register`` once per class it adds:

    @nlpkit.hookimpl
    def register_models(register):
        register(MyModel)

The classes themselves subclass :class:`nlpkit.Model`, :class:`nlpkit.Task` or
:class:`nlpkit.Dataset` (see ``nlpkit/contract.py`` for what each must provide).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

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
def register_metrics(register: Callable[[str, Callable[[list[dict], list[dict]], float]], None]) -> None:
    """Register metrics: ``register("name", fn)`` with ``fn(examples, predictions) -> float`` (examples and
    predictions in the task kind's shapes, see nlpkit/contract.py). A task asks for them by name (e.g. a
    ``metrics`` task option) through ``nlpkit.plugins.registry().metric(name)``."""


@hookspec
def report_sections(task: str, runs: list[dict[str, Any]], out_dir: str) -> list[dict[str, Any]] | None:
    """Add sections to a comparison report: called once per task with that task's finished runs.

    Return a list of ``{"title": str, "markdown": str, "figures": [png paths]}`` (or None).
    """
