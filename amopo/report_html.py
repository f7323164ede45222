"""Self-contained HTML pages (figures inlined as base64 PNG, tables) for dashboards that show one
file per output, such as the Kubeflow Pipelines UI."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Iterable, Mapping, Sequence

# A captioned table: (caption, column headers, rows of cells).
Grid = tuple[str, Sequence[str], Sequence[Sequence[object]]]


def html_page(title: str, *, figures: Iterable[str | Path] = (), table: Mapping[str, object] | None = None,
              notes: Iterable[str] = (), grids: Iterable[Grid] = ()) -> str:
    """A page with ``title``, paragraphs ``notes``, a two-column key/value ``table``, captioned
    ``grids`` of rows and every existing PNG of ``figures`` inlined; missing figures are skipped."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:2px 10px;text-align:left}"
             "tr:nth-child(even){background:#f4f4f4}img{max-width:100%;margin:1em 0}</style></head><body>",
             f"<h2>{html.escape(title)}</h2>"]
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    if table:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in table.items())
        parts.append(f"<table><tr><th>key</th><th>value</th></tr>{rows}</table>")
    for caption, header, cells in grids:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in cells)
        parts.append(f"<h3>{html.escape(caption)}</h3><table><tr>{head}</tr>{body}</table>")
    for figure in figures:
        path = Path(figure)
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
