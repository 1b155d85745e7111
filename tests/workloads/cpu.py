"""A CPU-heavy request with no downstream calls: all of its time is self time."""

from __future__ import annotations

from analyzer.demo.services import mandelbrot
from tests.workloads.recording import Recorder, entry_span


def cpu_render(rec: Recorder, *, requests: int = 10, width: int = 240, height: int = 120, max_iter: int = 80) -> None:
    """`render` GET /render/{id}: ~50 ms of pure-Python computation, no child spans.

    Cause a human would name: CPU-bound code. Trace-only analysis sees just unexplained self time
    and must not call it cpu_bound without CPU metrics.
    """
    tp = rec.provider("render")
    for r in range(requests):
        with entry_span(tp, "/render/{id}", f"/render/{r}") as span:
            span.set_attribute("app.render.iterations", mandelbrot(width, height, max_iter))
