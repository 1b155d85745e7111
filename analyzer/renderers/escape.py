"""Escaping of telemetry-derived text, one function per destination.

Service names, span names, statements and Prometheus label values come from whoever can send
telemetry, so every renderer passes them through the function for its output before they meet
markup: `for_terminal` (plain text), `for_rich_markup` (a rich markup string), `for_markdown`
(Markdown prose, headings and table cells), `markdown_code` (a Markdown code span),
`for_html` (HTML text and attribute values) and `for_slack` (Slack mrkdwn in webhook payloads).

All of them first make invisible and layout-changing characters visible, written as Python
escapes (`\\x1b`, `\\n`, `\\u202e`): C0 and C1 controls (ESC starts terminal sequences, CR and
LF forge lines), DEL, line and paragraph separators, bidirectional overrides and isolates
(which reorder what a reader sees), and lone surrogates (which are not UTF-8 at all).
"""

from __future__ import annotations

import html
import re

# Cc (C0, DEL, C1), the bidi marks/embeddings/overrides/isolates, U+2028/2029, surrogates.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# CommonMark lets a backslash escape any ASCII punctuation. Escaped everywhere: what opens or
# closes inline markup (emphasis, code, links, images, table cells, strikethrough, math; `_`
# only where it is not inside a word, as in `order_items`), `#` (a heading's closing sequence),
# and the `:` of `https://` and `.` of `www.` that GFM would turn into a link; at the start,
# what opens a block (list item, setext line, indented code).
_MARKDOWN_INLINE = re.compile(r"([\\`*\[\]|~#$]|(?<![^\W_])_|_(?![^\W_])|:(?=//)|(?<=www)\.)", re.IGNORECASE)
_MARKDOWN_BLOCK_START = re.compile(r"^( *)([-+=]|\d+(?=[.)])|)")
_HTML_IN_MARKDOWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _visible(match: re.Match[str]) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) <= 0xFF else f"\\u{ord(c):04x}"


def for_terminal(text: object) -> str:
    """`text` as one line of plain text that cannot move the cursor, retitle the window, open a
    hyperlink, reorder the line or fail to encode."""
    return _INVISIBLE.sub(_visible, str(text))


def for_rich_markup(text: object) -> str:
    """`text` for inside a rich markup string: shown as written (`[link=…]`, `[/]` are text)."""
    from rich.markup import escape  # only text output imports rich (see text.to_text)

    return escape(for_terminal(text))


def for_markdown(text: object) -> str:
    """`text` for Markdown prose, a heading or a table cell: no HTML, no emphasis, links, code,
    headings, list items or table cells of its own, on one line."""
    escaped = _MARKDOWN_INLINE.sub(r"\\\1", for_terminal(text))
    escaped = "".join(_HTML_IN_MARKDOWN.get(c, c) for c in escaped)
    return _MARKDOWN_BLOCK_START.sub(_escape_block_start, escaped, count=1)


def _escape_block_start(match: re.Match[str]) -> str:
    indent, opener = match.groups()
    if len(indent) >= 4:  # four spaces at a line start would open a code block
        indent = "&#32;" * len(indent)
    if not opener:
        return indent
    return f"{indent}{opener}\\" if opener[0].isdigit() else f"{indent}\\{opener}"


def markdown_code(text: object, *, in_table: bool = False) -> str:
    """`text` as a Markdown code span it cannot end early: the fence is one backtick longer than
    the longest run of backticks inside. In a table cell a `|` would still end the cell (GFM
    splits cells before parsing code spans), so `in_table` escapes it as GFM asks."""
    body = for_terminal(text)
    if in_table:
        body = body.replace("|", "\\|")
    runs = re.findall(r"`+", body)
    fence = "`" * (max(map(len, runs), default=0) + 1)
    if not body:
        body = " "  # `` is no code span; ` ` is an empty-looking one
    elif body[0] == "`" or body[-1] == "`" or (body[0] == body[-1] == " " and body.strip(" ")):
        body = f" {body} "  # CommonMark strips one space each side: a backtick at an end stays content
    return f"{fence}{body}{fence}"


def for_html(text: object) -> str:
    """`text` for HTML element content or a quoted attribute value."""
    return html.escape(for_terminal(text), quote=True)


# Slack mrkdwn: &, < and > are the only characters it wants entity-escaped (`<!channel>` and
# `<url|text>` are its mentions and links); the emphasis characters stop acting as markup when a
# zero-width space follows each, which keeps the text as written.
_SLACK_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_SLACK_MARKUP = re.compile(r"([*_~`])")


def for_slack(text: object) -> str:
    """`text` for Slack mrkdwn: no mentions, links, emphasis or code of its own, on one line."""
    escaped = "".join(_SLACK_ENTITIES.get(c, c) for c in for_terminal(text))
    return _SLACK_MARKUP.sub("\\1\u200b", escaped)
