"""Renderers of the report dict, one module per output format, behind one registry.

`render(report, fmt)` renders a report in a registered format; a new format (HTML, ...)
registers itself with `register(Format(...))` and is then known to every command.
`format_for_path` picks the format from an output name's extension (any case), and refuses one
it does not know rather than writing text under a `.markdown` or `.pdf` name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from analyzer.cliutil import UserError
from analyzer.renderers import json as _json
from analyzer.renderers import markdown as _markdown
from analyzer.renderers import text as _text


@dataclass(frozen=True)
class Options:
    """What the destination allows: `color` only for a terminal; `trace_url`, a trace UI's URL
    template with `{trace_id}`, makes sample trace ids links (HTML)."""

    color: bool = False
    trace_url: str | None = None
    width: int | None = None  # columns of the text report; None: 120


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


def render(report: dict, fmt: str, *, color: bool = False, trace_url: str | None = None,
           width: int | None = None) -> str:
    return _FORMATS[fmt].render(report, Options(color=color, trace_url=trace_url, width=width))


class UnknownFormat(UserError):
    """An output name whose extension is no registered format's (exit 2)."""


def format_for_path(path: str | None) -> str:
    """The format an output name asks for by its extension, case-insensitively; text for no
    name or one without an extension (`/dev/stdout`). Raises UnknownFormat naming the known ones."""
    suffix = PurePath(path).suffix.lower() if path else ""
    if not suffix:
        return "text"
    for fmt in _FORMATS.values():
        if suffix in fmt.extensions:
            return fmt.name
    known = ", ".join(f"{e} ({f.name})" for f in _FORMATS.values() for e in f.extensions)
    raise UnknownFormat(f"cannot tell the report format from {PurePath(path).suffix!r}; "
                        f"known extensions: {known}, or give --format")


register(Format("text", (".txt", ".text"), lambda r, o: _text.to_text(r, width=o.width or 120, color=o.color)))
register(Format("json", (".json",), lambda r, o: _json.to_json(r)))
register(Format("md", (".md", ".markdown"), lambda r, o: _markdown.to_markdown(r)))
register(Format("html", (".html", ".htm"), lambda r, o: _html(r, o)))


def _html(report: dict, options: Options) -> str:
    from analyzer.renderers.html import render_html  # imported on use: it brings matplotlib

    return render_html(report, trace_url_template=options.trace_url)
