"""A CPU-heavy request with no downstream calls: all of its time is self time."""

from __future__ import annotations

from tests.workloads.recording import Recorder, entry_span


def render_mandelbrot(width: int, height: int, max_iter: int) -> int:
    """Pure-Python escape-time loop; returns the iteration sum so the work cannot be skipped."""
    total = 0
    for y in range(height):
        ci = -1.2 + 2.4 * y / height
        for x in range(width):
            cr = -2.0 + 3.0 * x / width
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi < 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            total += n
    return total


def cpu_render(rec: Recorder, *, requests: int = 10, width: int = 240, height: int = 120, max_iter: int = 80) -> None:
    """`render` GET /render/{id}: ~50 ms of pure-Python computation, no child spans.

    Cause a human would name: CPU-bound code. Trace-only analysis sees just unexplained self time
    and must not call it cpu_bound without CPU metrics.
    """
    tp = rec.provider("render")
    for r in range(requests):
        with entry_span(tp, "/render/{id}", f"/render/{r}") as span:
            span.set_attribute("app.render.iterations", render_mandelbrot(width, height, max_iter))
