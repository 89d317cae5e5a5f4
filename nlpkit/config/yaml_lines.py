"""Reading a recipe's YAML safely and saying where a key came from: every key path mapped to its line, alias
bombs and repeated keys refused, and validation errors that name the file, the line (or the ``--set``) and the
closest valid key."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nlpkit.errors import NlpkitError, did_you_mean

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
