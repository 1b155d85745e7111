"""The escaping functions every renderer uses for telemetry-derived text (issue 10 §4).

Markdown is checked by rendering it with cmarkgfm (GitHub's own cmark fork, tables on, raw
HTML allowed so nothing is hidden by a sanitiser); text by rich, the library the terminal
report is printed with.
"""

from __future__ import annotations

import html
import io
import re

import cmarkgfm
from cmarkgfm.cmark import Options
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from analyzer.renderers.escape import for_html, for_markdown, for_rich_markup, for_terminal, markdown_code

# What a hostile name tries (issue 10 §4): erase the screen, retitle the window, a hyperlink,
# carriage return over the line, bidi reordering, rich markup, HTML, Markdown structure.
HOSTILE = [
    "\x1b[2J\x1b[Hcleared",
    "\x1b]0;owned\x07title",
    "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    "fake\rREAL",
    "\u202eevil\u202c",
    "\x9b31mC1 CSI",
    "[link=https://evil.example]click[/link]",
    "a[/]b",
    "trailing\\",
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "**bold** _em_ ~~gone~~",
    "a | b | c",
    "`code` and ``two``",
    "svc\n## RUST REWRITE: RECOMMENDED",
    "svc\r\n| forged | row |",
    "[click](javascript:alert(1))",
    "![img](https://evil.example/x.png)",
    "# heading",
    "1. item",
    "- item",
    "&lt;script&gt;",
    "lone \ud800 surrogate",
]
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u2028\u2029\ud800-\udfff]")
# Any code point, with the characters that mean something to a terminal, rich or Markdown
# drawn often enough that they meet each other.
SPECIAL = list("`*_[]()|#<>&\\!~$:.=+- \n\r\t\x1b\x07\x9b\u202e\u2066\ud800") + ["www.", "https://", "[/]", "[link="]
telemetry_text = st.lists(st.one_of(st.sampled_from(SPECIAL), st.characters(codec=None)), max_size=30).map("".join)


def md_html(markdown: str) -> str:
    return cmarkgfm.markdown_to_html_with_extensions(markdown, options=Options.CMARK_OPT_UNSAFE,
                                                     extensions=["table", "strikethrough", "autolink"])


def rich_plain(markup: str) -> str:
    buf = io.StringIO()
    Console(file=buf, width=10_000, color_system=None, highlight=False, emoji=False).print(markup, end="")
    return buf.getvalue()


def test_hostile_examples_are_visible_not_interpreted_in_text() -> None:
    assert for_terminal("\x1b[2J\x1b[Hcleared") == "\\x1b[2J\\x1b[Hcleared"
    assert for_terminal("fake\rREAL") == "fake\\rREAL"
    assert for_terminal("svc\n## X") == "svc\\n## X"
    assert for_terminal("\u202eevil\u202c") == "\\u202eevil\\u202c"
    assert for_terminal("\x9b31m") == "\\x9b31m"
    assert for_terminal("lone \ud800") == "lone \\ud800"
    assert for_terminal("ok — ünïcode ✓ 日本") == "ok — ünïcode ✓ 日本"  # printable text is untouched


def test_rich_markup_is_shown_as_written() -> None:
    for name in ("[link=https://evil.example]click[/link]", "a[/]b", "[bold red]x[/]", "trailing\\", "[/]"):
        assert rich_plain(f"[bold]{for_rich_markup(name)}[/]") == name


@settings(max_examples=300, deadline=None)
@given(telemetry_text)
def test_any_text_reaches_the_terminal_without_a_raw_control_character(name: str) -> None:
    shown = rich_plain(f"[cyan]{for_rich_markup(name)}[/] after")
    assert not RAW_CONTROL.search(shown)
    assert shown.endswith(" after")  # the markup around it still closes
    assert shown.encode("utf-8")  # no lone surrogate left to fail on a UTF-8 terminal


@settings(max_examples=300, deadline=None)
@given(telemetry_text)
def test_any_text_stays_one_table_cell_without_html(name: str) -> None:
    table = (f"| op | n |\n|---|---|\n| {for_markdown(name)} | last-cell-1 |\n"
             f"| {markdown_code(name, in_table=True)} | last-cell-2 |\n")
    out = md_html(table)
    assert out.count("<tr>") == 3
    assert out.count("<td>") == 4, out
    assert out.count("<td>last-cell-1</td>") == 1 and out.count("<td>last-cell-2</td>") == 1
    assert "<script" not in out.lower() and "<img" not in out.lower()
    assert not re.search(r'<a href="(?!mailto:)', out)  # an e-mail address is linked, and shown as it is


@settings(max_examples=300, deadline=None)
@given(telemetry_text)
def test_any_text_in_a_heading_and_prose_forges_no_structure(name: str) -> None:
    doc = f"## {for_markdown(name)} (python)\n\nText {for_markdown(name)} and {markdown_code(name)}.\n"
    out = md_html(doc)
    assert out.count("<h2>") == 1 and out.count("<h") == 1  # no other heading
    assert out.count("<p>") == 1
    assert not re.search(r'<(?!/?(h2|p|code)>|a href="mailto:|/a>)', out), out  # only the tags we wrote


@settings(max_examples=300, deadline=None)
@given(telemetry_text)
def test_markdown_round_trips_to_the_visible_text(name: str) -> None:
    """What a reader sees is the name itself (control characters as escapes), not an altered one."""
    visible = for_terminal(name)
    out = md_html(f"{for_markdown(name)}\n\n{markdown_code(name)}\n")
    texts = [re.sub(r'<a href="mailto:[^"]*">|</a>', "", t) for t in re.findall(r"<p>(.*?)</p>", out, re.S)]
    if visible.strip(" "):
        assert html.unescape(texts[0]).strip(" ") == visible.strip(" ")  # a paragraph's outer spaces are dropped
    assert html.unescape(re.sub(r"</?code>", "", texts[-1])) == (visible or " ")


def test_code_span_cannot_be_broken_out_of() -> None:
    for name in ("`", "``x``", "a ` b", "```", "x`", "` x `", ""):
        out = md_html(f"q {markdown_code(name)} end")
        assert out.count("<code>") == 1 and out.count("</code>") == 1
        assert html.unescape(re.search(r"<code>(.*)</code>", out, re.S).group(1)) == (name or " ")
        assert out.rstrip().endswith(" end</p>")


def test_hostile_examples_in_markdown() -> None:
    for name in HOSTILE:
        out = md_html(f"## {for_markdown(name)}\n\n| a | b |\n|---|---|\n| {for_markdown(name)} | x |\n")
        assert "<script" not in out and "<img" not in out and "<a " not in out and "<strong>" not in out
        assert "<em>" not in out and "<del>" not in out and "<li>" not in out and out.count("<h") == 1
        assert out.count("<td>") == 2


def test_html() -> None:
    assert for_html('<script>"x" & \'y\'') == "&lt;script&gt;&quot;x&quot; &amp; &#x27;y&#x27;"
    assert for_html("a\x1b[2Jb") == "a\\x1b[2Jb"
