"""Help for typed options, read from the schema itself: one row per field (type, default, allowed values,
description), printed by ``nlpkit plugins --options NAME`` and written as the option tables of docs/plugins.md,
so neither can drift from what the recipe loader accepts.

``python -m nlpkit.config.options_help docs/plugins.md`` rewrites the generated tables of a Markdown file in place (the
text between ``<!-- options: NAME -->`` and ``<!-- /options -->``); a test fails while they are stale.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass
class Row:
    """One option: what a reader needs to set it."""

    name: str
    type: str
    default: str
    allowed: str
    description: str


def _type_name(annotation: Any) -> tuple[str, list[Any]]:
    """('int | None', []) or ('str', ['mean', 'cls']) for a Literal; the values are the allowed ones."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # a checked type (e.g. PlainName): named by the type it checks
        return _type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        values = list(typing.get_args(annotation))
        return type(values[0]).__name__, values
    if origin in (typing.Union, types.UnionType):
        names, values = [], []
        for arg in typing.get_args(annotation):
            name, allowed = _type_name(arg)
            names.append(name)
            values += allowed
        return " | ".join(dict.fromkeys(names)), values
    if isinstance(annotation, type):
        return ("None" if annotation is type(None) else annotation.__name__), []
    return str(annotation).replace("typing.", ""), []


def _bounds(info: FieldInfo) -> str:
    """'>= 1', '< 1' or '0 <= x < 1' from the field's numeric constraints."""
    low = high = None
    for meta in info.metadata:
        for attr, sign in (("ge", "<="), ("gt", "<")):
            if getattr(meta, attr, None) is not None:
                low = (getattr(meta, attr), sign)
        for attr, sign in (("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                high = (sign, getattr(meta, attr))
    if low and high:
        return f"{low[0]} {low[1]} x {high[0]} {high[1]}"
    if low:
        return f"{low[1].replace('<', '>')} {low[0]}"
    if high:
        return f"{high[0]} {high[1]}"
    return ""


def rows(schema: type[BaseModel]) -> list[Row]:
    """One row per field of ``schema``, in declaration order."""
    out = []
    for name, info in schema.model_fields.items():
        type_name, values = _type_name(info.annotation)
        allowed = ", ".join(str(v) for v in values if v is not None) or _bounds(info)
        default = "(required)" if info.is_required() else repr(info.get_default(call_default_factory=True))
        out.append(Row(name, type_name, default, allowed, info.description or ""))
    return out


def text(schema: type[BaseModel], indent: str = "  ") -> list[str]:
    """Aligned help lines: name, type, default, [allowed values], description."""
    lines = []
    for r in rows(schema):
        parts = [f"{r.name:<20}", f"{r.type:<14}", f"{r.default:<12}", f"[{r.allowed}]" if r.allowed else "",
                 r.description]
        lines.append(indent + " ".join(p for p in parts if p).rstrip())
    return lines or [f"{indent}(no options)"]


def markdown(schema: type[BaseModel]) -> str:
    """A Markdown table of the options (the generated part of docs/plugins.md)."""
    def cell(value: str) -> str:
        return value.replace("|", "\\|")

    lines = ["| key | type | default | allowed | what it does |", "| --- | --- | --- | --- | --- |"]
    for r in rows(schema):
        lines.append(f"| `{r.name}` | {cell(r.type)} | `{r.default}` | {cell(r.allowed)} | {cell(r.description)} |")
    return "\n".join(lines)


def schema_named(name: str) -> type[BaseModel]:
    """The schema behind a generated table's NAME: ``train``, ``task``, or ``MODEL.KIND`` (a built-in or
    installed model's options for one task kind)."""
    from nlpkit.config.recipe import TaskEntry
    from nlpkit.train.options import TrainOptions

    if name == "train":
        return TrainOptions
    if name == "task":
        return TaskEntry
    from nlpkit.plugins import registry

    model, _, kind = name.partition(".")
    return registry().model(model).options_for(kind)


# The closing marker may follow the opening one directly (a new, still empty table): its newline is optional, or
# an empty table would run on to the next table's closing marker and swallow the text between.
TABLE = re.compile(r"(<!-- options: (\S+) -->\n)(.*?)\n?(<!-- /options -->)", re.S)


def refresh(document: str) -> str:
    """The document with every generated options table rewritten from the schema."""
    return TABLE.sub(lambda m: m.group(1) + markdown(schema_named(m.group(2))) + "\n" + m.group(4), document)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        path = Path(arg)
        path.write_text(refresh(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"refreshed {path}")
