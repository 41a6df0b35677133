"""Server-rendered inline SVG charts: no JavaScript, no external network, readable in any browser.

Every text that ends up in the SVG goes through `format_html`/`escape`; numbers are formatted
by us. Each chart carries `data-chart="<name>"` and its bars/points a class, so tests (and the
browser tests) can tell that it drew.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 40, 10, 10, 28


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 < value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return value


def bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    name: str,
    title: str,
    width: int = 760,
    height: int = 200,
    tick_every: int = 5,
    highlight_over: float | None = None,
) -> SafeString:
    """Vertical bars, one per value; `labels[i]` appears on the axis every `tick_every` bars and
    in each bar's tooltip. Bars above `highlight_over` are drawn in the warning colour."""
    top = _nice_max(max(values, default=0))
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(1, len(values))
    parts = [_axes(width, height, top, title)]
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        bar_h = plot_h * value / top
        x = PAD_LEFT + i * slot + slot * 0.1
        y = PAD_TOP + plot_h - bar_h
        css = "bar over" if highlight_over is not None and value > highlight_over else "bar"
        parts.append(
            format_html(
                '<rect class="{}" x="{}" y="{}" width="{}" height="{}">'
                "<title>{}: {}</title></rect>",
                css,
                _n(x),
                _n(y),
                _n(max(1.0, slot * 0.8)),
                _n(bar_h),
                label,
                _fmt(value),
            )
        )
        if i % tick_every == 0:
            parts.append(
                format_html(
                    '<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>',
                    _n(x + slot * 0.4),
                    height - 10,
                    label,
                )
            )
    return _svg(name, title, width, height, parts)


def step_chart(
    points: Sequence[tuple[str, float]],
    *,
    name: str,
    title: str,
    width: int = 760,
    height: int = 200,
    tick_every: int = 12,
) -> SafeString:
    """A step line with a filled area: (label, value) per equal interval, e.g. concurrency."""
    values = [v for _, v in points]
    top = _nice_max(max(values, default=0))
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    step = plot_w / max(1, len(points))
    base = PAD_TOP + plot_h
    path = [f"M{PAD_LEFT:.1f},{base:.1f}"]
    parts = [_axes(width, height, top, title)]
    for i, (label, value) in enumerate(points):
        x0 = PAD_LEFT + i * step
        y = base - plot_h * value / top
        path.append(f"L{x0:.1f},{y:.1f}L{x0 + step:.1f},{y:.1f}")
        parts.append(
            format_html(
                '<rect class="point" x="{}" y="{}" width="{}" height="{}" '
                'fill="transparent"><title>{}: {}</title></rect>',
                _n(x0),
                PAD_TOP,
                _n(step),
                _n(plot_h),
                label,
                _fmt(value),
            )
        )
        if i % tick_every == 0:
            parts.append(
                format_html(
                    '<text class="tick" x="{}" y="{}" text-anchor="start">{}</text>',
                    _n(x0),
                    height - 10,
                    label,
                )
            )
    path.append(f"L{PAD_LEFT + len(points) * step:.1f},{base:.1f}Z")
    parts.insert(1, format_html('<path class="area" d="{}"/>', "".join(path)))
    return _svg(name, title, width, height, parts)


def _axes(width: int, height: int, top: float, title: str) -> SafeString:
    plot_h = height - PAD_TOP - PAD_BOTTOM
    return format_html(
        '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
        '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
        '<text class="tick" x="{lx}" y="{ty}" text-anchor="end">{top}</text>'
        '<text class="tick" x="{lx}" y="{b}" text-anchor="end">0</text>'
        '<line class="grid" x1="{l}" y1="{t}" x2="{r}" y2="{t}"/>',
        l=PAD_LEFT,
        t=PAD_TOP,
        b=PAD_TOP + plot_h,
        r=width - PAD_RIGHT,
        lx=PAD_LEFT - 4,
        ty=PAD_TOP + 4,
        top=_fmt(top),
    )


def _svg(name: str, title: str, width: int, height: int, parts: list[SafeString]) -> SafeString:
    body = mark_safe("".join(parts))  # noqa: S308 - every part was built with format_html
    return format_html(
        '<svg class="ops-chart" data-chart="{}" role="img" aria-label="{}" '
        'viewBox="0 0 {} {}" width="100%" preserveAspectRatio="xMinYMin meet" '
        'xmlns="http://www.w3.org/2000/svg">{}</svg>',
        name,
        escape(title),
        width,
        height,
        body,
    )


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _n(value: float) -> str:
    """A coordinate, formatted before format_html (which would stringify and escape it first)."""
    return f"{value:.1f}"
