"""``--set key.path=value`` overrides: parsed as YAML, applied to the raw recipe, remembered for error messages,
and a warning when a model entry's own value makes a ``train.`` override change nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nlpkit.config.yaml_lines import load_yaml
from nlpkit.errors import NlpkitError
from nlpkit.train.options import TrainOptions

if TYPE_CHECKING:
    from nlpkit.config.recipe import RecipeSchema


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
