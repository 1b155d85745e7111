"""The HTML report's charts: matplotlib figures rendered to inline SVG strings.

matplotlib is imported on first use, so commands that draw no chart do not pay for it.
Text stays text (`svg.fonttype: none`; the browser's sans-serif draws it) and is never read as
mathtext (`text.parse_math: False`: a `$` in an operation name is a dollar sign). matplotlib
escapes `<`, `>` and `&` in SVG text and attributes; the XML prolog, DOCTYPE, metadata and
comments are dropped so the SVG can sit inside HTML. Ids are prefixed per chart so that two
charts' clip paths never share an id.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Sequence
from datetime import datetime, timezone

from analyzer.renderers.escape import for_html, for_terminal

#: Critical-path parts as charted: (key in the report, label, colour).
PARTS = (
    ("self", "self (in-process)", "#7f7f7f"),
    ("database", "database", "#1f77b4"),
    ("cache", "cache", "#ff7f0e"),
    ("remote_server", "downstream server", "#9467bd"),
    ("remote_gap", "wire / queueing", "#e377c2"),
    ("messaging", "messaging", "#2ca02c"),
)
_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "svg.hashsalt": "profile-first",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_ids = itertools.count(1)
_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_DROP = re.compile(r"<metadata>.*?</metadata>|<!--.*?-->", re.S)
_ID = re.compile(r'\bid="([^"]+)"')


def breakdown_parts(hotspot: dict) -> list[tuple[str, str, str, float]]:
    """(key, label, colour, mean ms) of a hot spot's critical-path parts, remote split when known."""
    b, detail = hotspot["breakdown"], hotspot.get("remote_detail")
    values = dict(b)
    if detail:
        values["remote_server"], values["remote_gap"] = detail["server"], detail["gap"]
    else:
        values["remote_server"], values["remote_gap"] = b["remote"], 0.0
    return [(key, label, colour, float(values.get(key, 0.0))) for key, label, colour in PARTS]


def breakdown_bar(hotspot: dict) -> str:
    """One horizontal bar: the mean request's critical path, stacked by part (ms)."""
    from matplotlib.figure import Figure

    parts = [p for p in breakdown_parts(hotspot) if p[3] > 0]
    total = sum(p[3] for p in parts) or 1.0
    with _style():
        fig = Figure(figsize=(7.2, 0.42))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        left = 0.0
        for _, label, colour, ms in parts:
            ax.barh([0], [ms], left=left, height=1.0, color=colour, label=label)
            if ms / total >= 0.12:  # label segments wide enough to hold their number
                ax.text(left + ms / 2, 0, f"{label.split(' ')[0]} {ms:.1f} ms", ha="center", va="center",
                        color="white", fontsize=8)
            left += ms
        ax.set_xlim(0, total)
        ax.set_ylim(-0.5, 0.5)
        ax.set_axis_off()
        return _svg(fig, "Critical path of the mean request: " + ", ".join(f"{p[1]} {p[3]:.1f} ms" for p in parts))


def timeseries_chart(ts: dict) -> str | None:
    """Latency percentiles, GC time and CPU use over the window, one panel each, shared time axis.

    `ts` is a service's `timeseries` (analyzer/timeseries.py); panels with fewer than two points
    are left out, and with them the chart when none is left."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    times = [datetime.fromtimestamp(t + ts["step_s"] / 2, timezone.utc) for t in ts["t"]]
    panels = []
    latency = [(k, ts[k]) for k in ("p50_ms", "p95_ms", "p99_ms") if _has(ts.get(k))]
    if latency:
        panels.append(("request latency (ms)", [(k[:3], v, c) for (k, v), c in
                                                 zip(latency, ("#1f77b4", "#ff7f0e", "#d62728"))]))
    if _has(ts.get("gc_seconds_per_second")):
        panels.append(("GC time (s per s)", [("GC", ts["gc_seconds_per_second"], "#8c564b")]))
    cpu = [(label, ts[k], c) for k, label, c in (("cpu_cores_used", "used", "#2ca02c"),
                                                  ("cpu_cores_available", "available", "#7f7f7f"))
           if _has(ts.get(k))]
    if cpu:
        panels.append(("CPU (cores)", cpu))
    if not panels:
        return None
    with _style():
        fig = Figure(figsize=(7.2, 1.6 * len(panels) + 0.4), layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (title, lines) in zip(axes, panels):
            for label, values, colour in lines:
                ax.plot(times, [float("nan") if v is None else v for v in values], label=label, color=colour,
                        linewidth=1.2, marker="." if len(times) <= 40 else None)
            ax.set_ylabel(title, fontsize=8)
            ax.set_ylim(bottom=0)
            ax.grid(True, axis="y", linewidth=0.4, alpha=0.6)
            if len(lines) > 1:
                ax.legend(loc="upper left", fontsize=7, frameon=False, ncols=len(lines))
        locator = AutoDateLocator()
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=timezone.utc))
        axes[-1].set_xlabel("UTC", fontsize=8)
        return _svg(fig, "Time series over the window: " + ", ".join(p[0] for p in panels))


_OWNER_COLOURS = {"own": "#d62728", "library": "#1f77b4", "runtime": "#7f7f7f"}


def flame_chart(nodes: Sequence[dict]) -> str | None:
    """An icicle of a service's CPU profile: callers on top, width = share of the CPU, coloured by
    whose code it is (own, library, runtime). `nodes` is a profile's `flame`."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not nodes:
        return None
    depth = max(n["depth"] for n in nodes) + 1
    with _style():
        fig = Figure(figsize=(7.2, 0.26 * depth + 0.5), layout="constrained")
        ax = fig.add_subplot()
        for n in nodes:
            colour = _OWNER_COLOURS.get(n["owner"], "#bbbbbb")
            ax.barh([n["depth"]], [n["width"]], left=n["start"], height=0.92, color=colour, edgecolor="white",
                    linewidth=0.5)
            chars = int(n["width"] * 130)  # about 130 characters fit across the chart at this size
            if chars >= 4:
                ax.text(n["start"] + 0.003, n["depth"], _shorten(for_terminal(n["function"]), chars), va="center", ha="left",
                        fontsize=7, color="white", clip_on=True)
        ax.set_xlim(0, 1)
        ax.set_ylim(depth - 0.5, -0.5)
        ax.set_yticks([])
        ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
        ax.set_xlabel("share of profiled CPU", fontsize=8)
        ax.legend(handles=[Patch(color=c, label=o) for o, c in _OWNER_COLOURS.items()], loc="lower right",
                  fontsize=7, frameon=False, ncols=3, bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, "CPU profile as an icicle chart: " + ", ".join(
            f"{for_terminal(n['function'])} {n['width']:.0%}" for n in sorted(nodes, key=lambda n: -n["width"])[:5]))


def trend_chart(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
                ylabel: str) -> str:
    """One line per series over runs (`labels` on the x axis), e.g. each hot spot's p99 per week."""
    from matplotlib.figure import Figure

    with _style():
        fig = Figure(figsize=(7.2, 2.4), layout="constrained")
        ax = fig.add_subplot()
        x = list(range(len(labels)))
        for name, values in series:
            ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", linewidth=1.2,
                    label=_shorten(name))
        ax.set_xticks(x, [_shorten(label, 16) for label in labels])
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(True, axis="y", linewidth=0.4, alpha=0.6)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
        return _svg(fig, f"{ylabel} per run")


def _has(values: Sequence[float | None] | None) -> bool:
    """At least two points: one point over a window is a number, not a line to look at."""
    return sum(v is not None for v in values or ()) >= 2


def _shorten(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _style():
    import matplotlib

    return matplotlib.rc_context(_RC)


def _svg(fig, title: str) -> str:  # noqa: ANN001 - a matplotlib Figure, imported lazily
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = _DROP.sub("", _PROLOG.sub("", buf.getvalue(), count=1))
    prefix = f"c{next(_ids)}-"
    svg = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = svg.replace('url(#', f'url(#{prefix}').replace('href="#', f'href="#{prefix}')  # also xlink:href
    return svg.replace("<svg ", f'<svg role="img" aria-label="{for_html(title)}" ', 1)
