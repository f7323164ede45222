"""The comparison as people read it: ``comparison.md`` (Markdown tables) and ``comparison.html``
(the same tables and the figures inlined, for the Kubeflow Pipelines UI). Both are built from the
same grids of already-formatted cells.

Every value is shown as mean ± one standard error where it has one; "—" marks a figure absent from
that objective's folders. Rates are in percent and their leads in percentage points.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from amopo.compare.ranking import RULE, Best
from amopo.compare.table import Metric
from amopo.report_html import Grid, html_page

ABSENT = "—"


def _value(kind: str, value: float) -> str:
    if kind == "rate":
        return f"{100 * value:.1f}%"
    if kind == "score":
        return f"{value:.2f}"
    if kind == "seconds":
        return f"{value:.1f} s"
    if kind == "bytes":
        return f"{value / 2 ** 30:.2f} GiB"
    return f"{value:.4g}"


def _spread(kind: str, se: float) -> str:
    if kind == "rate":
        return f"{100 * se:.1f}"
    if kind == "bytes":
        return f"{se / 2 ** 30:.2f}"
    return f"{se:.2g}" if kind != "score" else f"{se:.2f}"


def cell(metric: Metric, row: dict) -> str:
    if metric.name not in row:
        return ABSENT
    text = _value(metric.kind, row[metric.name])
    se = row.get(f"{metric.name}_se")
    return f"{text} ± {_spread(metric.kind, se)}" if se is not None and math.isfinite(se) else text


def _lead(metric: Metric, lead: float | None) -> str:
    if lead is None:
        return ABSENT
    return f"{100 * lead:.1f} pts" if metric.kind == "rate" else _value(metric.kind, lead)


def _noise(best: Best) -> str:
    if best.second is None:
        return "n/a (one objective)" if best.label else ABSENT
    if best.within_noise is None:
        return "n/a (no se)"
    return "yes" if best.within_noise else "no"


def metrics_grid(labels: Sequence[str], metrics: Sequence[Metric], table: dict[str, dict],
                 leaders: dict[str, Best]) -> Grid:
    header = ["metric", *labels, "best", "lead over 2nd", "within noise"]
    rows = []
    for m in metrics:
        if not any(m.name in table[label] for label in labels):
            continue
        best = leaders[m.name]
        arrow = "↑" if m.higher_is_better else "↓"
        rows.append([f"{m.title} {arrow}", *[cell(m, table[label]) for label in labels], best.label or ABSENT,
                     _lead(m, best.lead), _noise(best)])
    return "Metrics (mean ± 1 standard error; ↑ higher is better, ↓ lower is better)", header, rows


def head_to_head_grid(flat: dict, labels: Sequence[str]) -> Grid | None:
    rows = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            key = f"h2h/{a}/{b}"
            if f"{key}/winrate" not in flat:
                continue
            rate, se = flat[f"{key}/winrate"], flat.get(f"{key}/winrate_se")
            noise = flat.get(f"{key}/within_noise")
            rows.append([f"{a} vs {b}", f"{100 * rate:.1f}%" + (f" ± {100 * se:.1f}" if se is not None else ""),
                         f"{int(flat[f'{key}/n'])}", "n/a (no se)" if noise is None else ("yes" if noise else "no")])
    if not rows:
        return None
    return ("Head-to-head (judged in both orders; win rate of the first objective against the second; "
            "within noise: |win rate − 50%| < 2·se)", ["pair", "win rate", "instructions", "within noise"], rows)


def settings_grid(labels: Sequence[str], table: dict[str, dict], sources: dict[str, dict]) -> Grid:
    def number(label: str, key: str, fmt: str = "{:g}") -> str:
        value = table[label].get(key)
        return ABSENT if value is None else fmt.format(value)

    rows = [["objective", *[sources[label].get("objective") or ABSENT for label in labels]],
            ["β", *[number(label, "train/beta") for label in labels]],
            ["optimizer steps", *[number(label, "train/steps", "{:.0f}") for label in labels]],
            ["held-out pairs", *[number(label, "pref_accuracy/pairs", "{:.0f}") for label in labels]],
            ["win-rate instructions", *[number(label, "winrate/n", "{:.0f}") for label in labels]],
            ["training folder", *[sources[label]["train_dir"] for label in labels]],
            ["evaluation folder", *[sources[label]["eval_dir"] for label in labels]]]
    return "Runs", ["", *labels], rows


def headline(best: Best) -> str:
    if best.label is None:
        return f"No best objective on {best.metric}: {best.reason}."
    return f"Best objective on {best.metric}: {best.label} ({best.reason})."


def _markdown_grid(grid: Grid) -> str:
    caption, header, rows = grid

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([f"### {caption}", "", line(header), line(["---"] * len(header)), *map(line, rows)])


def write_reports(folder: Path, *, best: Best, grids: Sequence[Grid], notes: Sequence[str],
                  figures: Sequence[Path]) -> tuple[Path, Path]:
    """``comparison.md`` and ``comparison.html`` in ``folder``."""
    intro = [headline(best), f"Within noise: {RULE}."]
    md = ["# Objectives compared", "", *[f"{p}\n" for p in intro]]
    md += [_markdown_grid(g) + "\n" for g in grids]
    if notes:
        md += ["### Notes", "", *[f"- {n}" for n in notes], ""]
    md += [f"![{f.stem}]({f.name})" for f in figures]
    (folder / "comparison.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    page = html_page("Objectives compared", notes=[*intro, *notes], grids=grids, figures=figures)
    (folder / "comparison.html").write_text(page, encoding="utf-8")
    return folder / "comparison.md", folder / "comparison.html"
