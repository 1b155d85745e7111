"""Renderers of the report dict, one module per output format, behind one registry.

`render(report, fmt)` renders a report in a registered format; a new format (HTML, ...)
registers itself with `register(Format(...))` and is then known to every command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from analyzer.renderers import json as _json
from analyzer.renderers import markdown as _markdown
from analyzer.renderers import text as _text


@dataclass(frozen=True)
class Options:
    """What the destination allows: `color` only for a terminal; `trace_url`, a trace UI's URL
    template with `{trace_id}`, makes sample trace ids links (HTML)."""

    color: bool = False
    trace_url: str | None = None


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]  # lower case, with the dot
    render: Callable[[dict, Options], str]


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> None:
    _FORMATS[fmt.name] = fmt


def formats() -> tuple[str, ...]:
    """Registered format names, in registration order."""
    return tuple(_FORMATS)


def render(report: dict, fmt: str, *, color: bool = False, trace_url: str | None = None) -> str:
    return _FORMATS[fmt].render(report, Options(color=color, trace_url=trace_url))


register(Format("text", (), lambda r, o: _text.to_text(r, color=o.color)))
register(Format("json", (".json",), lambda r, o: _json.to_json(r)))
register(Format("md", (".md",), lambda r, o: _markdown.to_markdown(r)))
register(Format("html", (".html", ".htm"), lambda r, o: _html(r, o)))


def _html(report: dict, options: Options) -> str:
    from analyzer.renderers.html import render_html  # imported on use: it brings matplotlib

    return render_html(report, trace_url_template=options.trace_url)
