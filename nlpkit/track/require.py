"""Before any run starts: every tracker a recipe asks for is installed and can be imported, or a clear error."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from nlpkit.errors import NlpkitError
from nlpkit.plugins import Registry


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (checked without importing them: cheap)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def require_trackers(names: Iterable[str], registry: Registry) -> None:
    """Raise before anything trains when a tracker asked for needs a library that is not installed: failing
    inside each run instead would switch tracking off silently, run after run."""
    problems = []
    for name in sorted(set(names)):
        cls = registry.tracker(name)
        missing = missing_modules(cls.requires)
        if missing:
            problems.append(f"tracker '{name}' needs {', '.join(missing)}: {cls.install_hint}")
    if problems:
        raise NlpkitError("; ".join(problems))
