"""Rendering a report's blocks to Markdown and to one self-contained HTML file.

A report is a list of blocks, rendered twice, each renderer escaping every piece of text for its own
format: data (sample sentences, labels, model names) is never trusted as markup. Blocks are tuples:
``("h", level, text)``, ``("p", text)``, ``("list", [text])``, ``("table", Table)``,
``("figure", caption, png_path)`` and ``("markdown", text)`` (a plugin's own Markdown; raw HTML in it
is shown as text).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlpkit.report.tables import Table

Block = tuple[Any, ...]
# Only '<' before a letter, '/', '!' or '?' can open a tag or autolink: "p < 0.01" stays readable.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def plugin_figure(entry: Any, out: Path) -> Block | None:
    """A figure a plugin's report section names: a PNG path (absolute, or relative to the report folder ``out``)
    or ``{"path": ..., "caption": ...}``; the caption defaults to the file's name. None when the file is missing.
    (A path relative to the working directory, as before captions existed, is still found.)"""
    path, caption = (entry.get("path"), entry.get("caption")) if isinstance(entry, dict) else (entry, None)
    if not path:
        return None
    found = next((p for p in (Path(out) / path, Path(path)) if p.is_file()), None)  # absolute: out / path is path
    return ("figure", str(caption or found.name), found) if found else None


# ---------------------------------------------------------------- Markdown

def md_escape(text: Any) -> str:
    """Escape data for Markdown: no emphasis, links, table breaks or raw HTML (a '<script>' stays text)."""
    text = " ".join(str(text).split())
    text = re.sub(r"([\\`*\[\]|])", r"\\\1", text)
    text = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)  # intraword '_' is never emphasis
    text = re.sub(r"^([#>+-])", r"\\\1", text)  # would start a heading, quote or list
    return _TAG_START.sub("&lt;", text)


def _md_without_html(markdown: str) -> str:
    """Plugin Markdown with raw HTML tags neutralised (outside code), as the HTML report renders it."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced:
            parts = re.split(r"(`+[^`]*`+)", line)  # odd parts are code spans: '<' there is literal already
            line = "".join(p if i % 2 else _TAG_START.sub("&lt;", p) for i, p in enumerate(parts))
        lines.append(line)
    return "\n".join(lines)


def markdown_table(table: Table) -> str:
    """A :class:`Table` as a Markdown pipe table, best cells in bold."""
    lines = ["| " + " | ".join(md_escape(h) for h in table.header) + " |", "|" + "---|" * len(table.header)]
    for i, row in enumerate(table.rows):
        cells = [f"**{md_escape(c)}**" if (i, j) in table.best else md_escape(c) for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_block(block: Block, out: Path) -> str:
    kind = block[0]
    if kind == "h":
        return "#" * block[1] + " " + md_escape(block[2])
    if kind == "p":
        return md_escape(block[1])
    if kind == "list":
        return "\n".join("- " + md_escape(item) for item in block[1])
    if kind == "table":
        return markdown_table(block[1])
    if kind == "figure":
        target = Path(os.path.relpath(block[2], out)).as_posix()
        return f"![{md_escape(block[1])}](<{target}>)"
    if kind == "markdown":
        return _md_without_html(block[1])
    raise ValueError(f"unknown report block {kind!r}")  # a programming error, not bad input


def render_markdown(blocks: Sequence[Block], out: Path) -> str:
    """Markdown with figures linked relative to ``out`` (so the folder can be moved or zipped)."""
    return "\n\n".join(_md_block(block, out) for block in blocks) + "\n"


# ---------------------------------------------------------------- HTML

_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f2f4f7} td.best{background:#e6f4ea} tr:nth-child(even) td:not(.best){background:#fafafa}
figure{display:inline-block;vertical-align:top;margin:.6em 1.2em .6em 0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#555}
</style></head><body>
{% for b in blocks %}
{%- if b.kind == "h" %}<h{{ b.level }}{% if b.id %} id="{{ b.id }}"{% endif %}>{{ b.text }}</h{{ b.level }}>
{%- elif b.kind == "p" %}<p>{{ b.text }}</p>
{%- elif b.kind == "list" %}<ul>{% for item in b.entries %}<li>{{ item }}</li>{% endfor %}</ul>
{%- elif b.kind == "toc" %}<nav><ul>{% for id, text in b.entries %}<li><a href="#{{ id }}">{{ text }}</a></li>
{% endfor %}</ul></nav>
{%- elif b.kind == "table" %}<table><thead><tr>{% for h in b.table.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in b.table.rows %}{% set i = loop.index0 %}<tr>{% for cell in row %}
{%- if (i, loop.index0) in b.table.best %}<td class="best"><strong>{{ cell }}</strong></td>
{%- else %}<td>{{ cell }}</td>{% endif %}{% endfor %}</tr>
{% endfor %}</tbody></table>
{%- elif b.kind == "figure" %}<figure><img src="{{ b.src }}" alt="{{ b.caption }}">
<figcaption>{{ b.caption }}</figcaption></figure>
{%- elif b.kind == "markdown" %}{{ b.html }}
{%- endif %}
{% endfor %}
</body></html>
"""


def _markdown_to_html(text: str) -> Any:
    """Plugin Markdown to HTML with raw HTML disabled, so plugin text is escaped like everything else."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


def _html_item(block: Block) -> dict[str, Any]:
    kind = block[0]
    if kind == "h":
        return {"kind": "h", "level": block[1], "text": block[2], "id": None}
    if kind == "figure":
        data = base64.b64encode(Path(block[2]).read_bytes()).decode("ascii")
        return {"kind": "figure", "caption": block[1], "src": f"data:image/png;base64,{data}"}
    if kind == "markdown":
        return {"kind": "markdown", "html": _markdown_to_html(block[1])}
    if kind == "p":
        return {"kind": "p", "text": block[1]}
    if kind == "list":
        return {"kind": "list", "entries": block[1]}
    if kind == "table":
        return {"kind": "table", "table": block[1]}
    raise ValueError(f"unknown report block {kind!r}")  # a programming error, not bad input


def render_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML file: figures inlined as base64 PNG, all text escaped by jinja2, and a table
    of contents of the top-level sections when there is more than one."""
    import jinja2

    items = [_html_item(block) for block in blocks]
    toc = []
    for item in items:
        if item["kind"] == "h" and item["level"] == 2:
            item["id"] = f"section-{len(toc) + 1}"
            toc.append((item["id"], item["text"]))
    if len(toc) > 1:
        items.insert(1, {"kind": "toc", "entries": toc})
    return jinja2.Environment(autoescape=True).from_string(_HTML).render(title=title, blocks=items)
