"""Comparison figures (matplotlib, Agg): grouped bars, one group per metric and one bar per objective
with ±1 standard-error bars; and one judge-score radar per objective with the base model beside it.

Metrics on one scale share a panel (rates in %, judge scores 1–5); every other metric gets a panel of
its own, since a slope and a throughput have nothing in common but the objectives.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

from amopo.compare.table import Metric
from amopo.evaluate.plots import _pyplot, plot_dimension_radar

_SHARED = {"rate": ("rates (%)", 100.0, (0.0, 100.0)), "score": ("judge scores (1–5)", 1.0, (1.0, 5.0))}


Panel = tuple[str, float, "tuple | None", list[Metric]]   # title, value scale, y limits, metrics


def _panels(metrics: Sequence[Metric], table: dict[str, dict]) -> list[Panel]:
    present = [m for m in metrics if any(m.name in row for row in table.values())]
    panels = []
    for kind, (title, scale, ylim) in _SHARED.items():
        group = [m for m in present if m.kind == kind]
        if group:
            panels.append((title, scale, ylim, group))
    for m in present:
        if m.kind not in _SHARED:
            panels.append((m.title, 1.0 / 2 ** 30 if m.kind == "bytes" else 1.0, None, [m]))
    return panels


def plot_metric_bars(labels: Sequence[str], metrics: Sequence[Metric], table: dict[str, dict],
                     out: Path) -> Path | None:
    """Grouped bars of every metric some objective has; None when there is none."""
    panels = _panels(metrics, table)
    if not panels:
        return None
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    width = 0.8 / len(labels)
    for ax, (title, scale, ylim, group) in zip(axes.flat, panels):
        for j, label in enumerate(labels):
            row = table[label]
            xs = [i + (j - (len(labels) - 1) / 2) * width for i, m in enumerate(group) if m.name in row]
            values = [scale * row[m.name] for m in group if m.name in row]
            errors = [scale * row.get(f"{m.name}_se", math.nan) for m in group if m.name in row]
            ax.bar(xs, values, width, yerr=errors, capsize=3, color=colors(j % 10), label=label)
        crowded = len(group) > 3
        ax.set_xticks(range(len(group)), [m.short or m.title for m in group], fontsize=7,
                      rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.set_xlim(-0.6, len(group) - 0.4)
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("objectives compared (bars: ±1 standard error)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))   # room for the title
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "objective"


def plot_radars(labels: Sequence[str], dimensions: Sequence[str], table: dict[str, dict], folder: Path) -> list[Path]:
    """``radar_<k>_<label>.png`` per objective with judge scores: its mean score per dimension and the
    base model's (from the same evaluation)."""
    made = []
    for k, label in enumerate(labels):
        row = table[label]
        if not any(f"dimension/{d}/model" in row for d in dimensions):
            continue
        base = [row.get(f"dimension/{d}/baseline", math.nan) for d in dimensions]
        path = plot_dimension_radar(dimensions, [row.get(f"dimension/{d}/model", math.nan) for d in dimensions],
                                    None if all(math.isnan(b) for b in base) else base,
                                    folder / f"radar_{k}_{safe_name(label)}.png", labels=(label, "base model"))
        if path is not None:
            made.append(path)
    return made
