"""A self-contained HTML report: inline CSS, figures embedded as PNG data URIs, no scripts.

It opens from disk in any browser with no server and no network; everything user-supplied is
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medimg.files import write_atomic

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #eef3f8; } td.t { text-align: left; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; }
.warn { color: #a04000; font-weight: 600; } .note { color: #555; font-size: .9em; }
.scroll { max-height: 28em; overflow: auto; display: inline-block; }
"""


@dataclass
class Section:
    """A titled part of the report: HTML fragments made by the helpers of this module."""

    title: str
    body: list[str] = field(default_factory=list)


def esc(value) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value))


def paragraph(text: str, css_class: str | None = None) -> str:
    """A paragraph of plain (escaped) text."""
    attr = f' class="{css_class}"' if css_class else ""
    return f"<p{attr}>{esc(text)}</p>"


def bullet_list(items: Sequence[str]) -> str:
    """An unordered list of plain (escaped) text items."""
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


def fmt(value, digits: int = 3) -> str:
    """A number for a table cell (``–`` when missing or not finite)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return str(value)


def with_ci(metric: dict | None, digits: int = 3) -> str:
    """``value [low, high]`` of a metric block."""
    if not metric:
        return "–"
    text = fmt(metric.get("value", metric.get("difference")), digits)
    low, high = metric.get("ci", (None, None))
    if None not in (low, high) and math.isfinite(low) and math.isfinite(high):
        text += f" [{fmt(low, digits)}, {fmt(high, digits)}]"
    return text


def table_html(frame: pd.DataFrame, caption: str | None = None, scroll: bool = False) -> str:
    """A DataFrame as an escaped HTML table (cells formatted with :func:`fmt`)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    table = f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>' if scroll else table


def _cell(value) -> str:
    """A table cell; text that is not a number (or a number with its interval) is left-aligned."""
    text = fmt(value)
    numeric = re.match(r"^[-–−]?[\d.]", text) is not None or text == "–"
    return f"<td>{esc(text)}</td>" if numeric else f'<td class="t">{esc(text)}</td>'


def figure_html(path: str | Path, caption: str) -> str:
    """A PNG file embedded as a base64 data URI, with a caption."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def render(title: str, sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # An empty icon: browsers would otherwise request favicon.ico beside the file.
        '<link rel="icon" href="data:,">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{esc(section.title)}</h2>{''.join(section.body)}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    out_dir: str | Path, sections: Sequence[Section], title: str = "Evaluation report"
) -> Path:
    """Write ``<out_dir>/report.html`` atomically and return its path."""
    text = render(title, sections)
    return write_atomic(Path(out_dir) / "report.html", lambda tmp: tmp.write_text(text, "utf-8"))
