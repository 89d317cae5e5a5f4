"""Plugin loading: a pluggy host that finds models, tasks and datasets through the ``nlpkit`` entry points.

Built-ins are registered by the same entry points as third-party packages. Environment variables:
``NLPKIT_PLUGINS=a,b`` loads only the named entry points; ``NLPKIT_STRICT_PLUGINS=1`` makes a plugin
that fails to import fatal instead of a warning.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from nlpkit import hookspecs
from nlpkit.contract import TASK_KINDS, Dataset, Model, Task
from nlpkit.errors import NlpkitError, not_found

GROUP = "nlpkit"
KINDS = {"models": Model, "tasks": Task, "datasets": Dataset}


@dataclass
class Registry:
    """Everything the installed plugins registered, by kind and name, and where each came from."""

    models: dict[str, type[Model]] = field(default_factory=dict)
    tasks: dict[str, type[Task]] = field(default_factory=dict)
    datasets: dict[str, type[Dataset]] = field(default_factory=dict)
    metrics: dict[str, Callable[[list[dict], list[dict]], float]] = field(default_factory=dict)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> "dist version"
    failed: dict[str, str] = field(default_factory=dict)  # entry point -> error

    def get(self, kind: str, name: str) -> type:
        table = getattr(self, kind)
        if name not in table:
            raise not_found(kind, name, table)
        return table[name]

    def model(self, name: str) -> type[Model]:
        return self.get("models", name)

    def task(self, name: str) -> type[Task]:
        return self.get("tasks", name)

    def dataset(self, name: str) -> type[Dataset]:
        return self.get("datasets", name)

    def metric(self, name: str) -> Callable[[list[dict], list[dict]], float]:
        return self.get("metrics", name)


def _manager() -> tuple[pluggy.PluginManager, dict[str, str], dict[str, str]]:
    """Register every allowed entry point; return the manager, {entry point: distribution}, {entry point: error}."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    failed: dict[str, str] = {}
    dists: dict[str, str] = {}
    allow = {n.strip() for n in os.environ.get("NLPKIT_PLUGINS", "").split(",") if n.strip()}
    strict = os.environ.get("NLPKIT_STRICT_PLUGINS", "") not in ("", "0", "false")
    for ep in entry_points(group=GROUP):
        if (allow and ep.name not in allow) or pm.get_plugin(ep.name) is not None:
            continue
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        try:
            pm.register(ep.load(), name=ep.name)
            pm.check_pending()  # a misspelt hook name in this plugin
        except Exception as err:  # a broken plugin must not take the others down
            if strict:
                raise NlpkitError(f"Plugin '{ep.name}' ({dist}) failed to load: {err!r}") from err
            failed[ep.name] = f"{type(err).__name__}: {err}"
            print(f"nlpkit: skipping plugin '{ep.name}' ({dist}): {type(err).__name__}: {err}", file=sys.stderr)
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
        else:
            dists[ep.name] = dist
    return pm, dists, failed


def load_registry() -> Registry:
    """Load every plugin and collect what they register. Duplicate names are an error naming both sources."""
    pm, dists, failed = _manager()
    registry = Registry(failed=failed)
    for kind, base in KINDS.items():
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            source = dists.get(impl.plugin_name, impl.plugin_name)

            def register(cls: type, kind: str = kind, base: type = base, source: str = source) -> None:
                if not (isinstance(cls, type) and issubclass(cls, base)):
                    raise NlpkitError(f"Plugin {source} registered {cls!r} as {kind[:-1]}: not a subclass of {base}")
                name = cls.name
                table = getattr(registry, kind)
                if name in table:
                    raise NlpkitError(
                        f"Two plugins register the {kind[:-1]} '{name}': {registry.sources[(kind, name)]} and {source}"
                    )
                if kind == "models" and set(cls.serves) - set(TASK_KINDS):
                    raise NlpkitError(f"Model '{name}' ({source}) serves unknown task kinds {cls.serves}")
                table[name] = cls
                registry.sources[(kind, name)] = source

            impl.function(register=register)
    for impl in pm.hook.register_metrics.get_hookimpls():
        source = dists.get(impl.plugin_name, impl.plugin_name)

        def register_metric(name: str, fn: Callable, source: str = source) -> None:
            if not isinstance(name, str) or not callable(fn):
                raise NlpkitError(f"Plugin {source} registered metric {name!r}: expected register(name, callable)")
            if name in registry.metrics:
                raise NlpkitError(f"Two plugins register the metric '{name}': "
                                  f"{registry.sources[('metrics', name)]} and {source}")
            registry.metrics[name] = fn
            registry.sources[("metrics", name)] = source

        impl.function(register=register_metric)
    _registry_cache["pm"] = pm
    return registry


_registry_cache: dict[str, object] = {}


def registry() -> Registry:
    """The registry, loaded once per process (lazily: nothing is imported until a command needs it)."""
    if "registry" not in _registry_cache:
        _registry_cache["registry"] = load_registry()
    return _registry_cache["registry"]  # type: ignore[return-value]


def plugin_manager() -> pluggy.PluginManager:
    registry()
    return _registry_cache["pm"]  # type: ignore[return-value]


def reset() -> None:
    """Forget loaded plugins (tests install plugins at run time)."""
    _registry_cache.clear()
