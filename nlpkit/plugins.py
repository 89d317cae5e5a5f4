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
from nlpkit.contract import TASK_KINDS, Dataset, Launcher, Model, Task, Tracker
from nlpkit.errors import NlpkitError, not_found

GROUP = "nlpkit"
KINDS = {"models": Model, "tasks": Task, "datasets": Dataset, "trackers": Tracker, "launchers": Launcher}


@dataclass
class Registry:
    """Everything the installed plugins registered, by kind and name, and where each came from."""

    models: dict[str, type[Model]] = field(default_factory=dict)
    tasks: dict[str, type[Task]] = field(default_factory=dict)
    datasets: dict[str, type[Dataset]] = field(default_factory=dict)
    trackers: dict[str, type[Tracker]] = field(default_factory=dict)
    metrics: dict[str, Callable[[list[dict], list[dict]], float]] = field(default_factory=dict)
    launchers: dict[str, type[Launcher]] = field(default_factory=dict)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> "dist version"
    failed: dict[str, str] = field(default_factory=dict)  # entry point -> error
    # (kind, name) -> every source registering that name, when there are several: the name is unusable
    # (which one a recipe meant is unknowable), everything else stays usable.
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> type:
        table = getattr(self, kind)
        if (kind, name) in self.clashes:
            raise NlpkitError(
                f"Two plugins register the {kind[:-1]} '{name}': {' and '.join(self.clashes[(kind, name)])}; "
                "uninstall one of these packages, or load one with NLPKIT_PLUGINS=<entry point>,..."
            )
        if name not in table:
            err = not_found(kind, name, table)
            if self.failed:  # the plugin that registers it may be one of them: say so, not only "can't find"
                failures = "; ".join(f"'{ep}' ({why[:200]})" for ep, why in sorted(self.failed.items()))
                err = NlpkitError(f"{err} Plugins that failed to load (one may provide it): {failures}")
            raise err
        return table[name]

    def model(self, name: str) -> type[Model]:
        return self.get("models", name)

    def task(self, name: str) -> type[Task]:
        return self.get("tasks", name)

    def dataset(self, name: str) -> type[Dataset]:
        return self.get("datasets", name)

    def tracker(self, name: str) -> type[Tracker]:
        return self.get("trackers", name)

    def launcher(self, name: str) -> type[Launcher]:
        return self.get("launchers", name)

    def metric(self, name: str) -> Callable[[list[dict], list[dict]], float]:
        return self.get("metrics", name)


def _said(err: BaseException) -> str:
    """A plugin's failure in one line; a bare ``sys.exit()`` says what it did, not an empty message."""
    if isinstance(err, SystemExit):
        return f"SystemExit: the plugin called sys.exit({err.code!r})"
    return f"{type(err).__name__}: {err}"


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
        except (Exception, SystemExit) as err:  # a broken plugin (even one calling sys.exit) must not stop the others
            if strict:
                raise NlpkitError(f"Plugin '{ep.name}' ({dist}) failed to load: {err!r}") from err
            failed[ep.name] = _said(err)
            print(f"nlpkit: skipping plugin '{ep.name}' ({dist}): {_said(err)}", file=sys.stderr)
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
        else:
            dists[ep.name] = dist
    return pm, dists, failed


def load_registry() -> Registry:
    """Load every plugin and collect what they register. A plugin whose hook raises (or exits) is skipped
    whole, like one that fails to import; a name registered twice is a clash, named with both sources,
    that only a recipe naming it runs into."""
    pm, dists, failed = _manager()
    registry = Registry(failed=failed)
    owners: dict[tuple[str, str], str] = {}  # (kind, name) -> the entry point that registered it
    hooks = [(kind, getattr(pm.hook, f"register_{kind}")) for kind in KINDS] + [("metrics", pm.hook.register_metrics)]
    for kind, hook in hooks:
        for impl in hook.get_hookimpls():
            if impl.plugin_name in failed:
                continue
            source = dists.get(impl.plugin_name, impl.plugin_name)
            staged: list[tuple[str, object]] = []  # committed only if the whole hook succeeds
            try:
                impl.function(register=_registrar(kind, source, staged))
            except (Exception, SystemExit) as err:
                if os.environ.get("NLPKIT_STRICT_PLUGINS", "") not in ("", "0", "false"):
                    raise NlpkitError(f"Plugin '{impl.plugin_name}' ({source}) failed to register: {err!r}") from err
                failed[impl.plugin_name] = _said(err)
                print(f"nlpkit: skipping plugin '{impl.plugin_name}' ({source}): register_{kind} raised "
                      f"{_said(err)}", file=sys.stderr)
                _forget(registry, owners, impl.plugin_name)
                continue
            for name, obj in staged:
                table = getattr(registry, kind)
                if name in table:
                    first = registry.sources[(kind, name)]
                    registry.clashes.setdefault((kind, name), [first]).append(source)
                    continue
                table[name] = obj
                registry.sources[(kind, name)] = source
                owners[(kind, name)] = impl.plugin_name
    _registry_cache["pm"] = pm
    return registry


def _registrar(kind: str, source: str, staged: list[tuple[str, object]]) -> Callable:
    """The ``register`` callable handed to one plugin's hook: checks what it is given, stages it."""
    if kind == "metrics":
        def register_metric(name: str, fn: Callable) -> None:
            if not isinstance(name, str) or not callable(fn):
                raise NlpkitError(f"Plugin {source} registered metric {name!r}: expected register(name, callable)")
            staged.append((name, fn))

        return register_metric
    base = KINDS[kind]

    def register(cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise NlpkitError(f"Plugin {source} registered {cls!r} as {kind[:-1]}: not a subclass of {base}")
        if not isinstance(getattr(cls, "name", None), str):
            raise NlpkitError(f"Plugin {source} registered {cls!r} without a 'name'")
        if kind == "models" and set(cls.serves) - set(TASK_KINDS):
            raise NlpkitError(f"Model '{cls.name}' ({source}) serves unknown task kinds {cls.serves}")
        staged.append((cls.name, cls))

    return register


def _forget(registry: Registry, owners: dict[tuple[str, str], str], plugin: str) -> None:
    """Drop what an earlier hook of a plugin that has now failed registered (a broken plugin is skipped whole)."""
    for kind, name in [key for key, owner in owners.items() if owner == plugin]:
        getattr(registry, kind).pop(name, None)
        registry.sources.pop((kind, name), None)
        del owners[(kind, name)]


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
