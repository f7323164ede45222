"""Training curves as a PNG: loss, per-dimension accuracy and margin, dimension weights α."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def plot_history(history: Path, out: Path, names: Sequence[str]) -> Path | None:
    """Write the curves of ``history.jsonl`` to ``out``; None when there is nothing to plot."""
    records = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    window = max(1, len(records) // 10)
    panels = [("loss", ["loss"]), ("accuracy", [f"accuracy/{n}" for n in names]),
              ("margin (β·ā_w − β·ā_l)", [f"margin/{n}" for n in names])]
    if any(f"alpha/{n}" in records[0] for n in names):
        panels.append(("dimension weight α", [f"alpha/{n}" for n in names]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key in records[0]:
                values = [r[key] for r in records]
                line, = ax.plot(steps, _smooth(values, window), label=key.split("/", 1)[-1])
                if window > 1:
                    ax.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    if window > 1:
        fig.suptitle(f"running mean over {window} steps (raw values faint)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing running mean over ``window`` values."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
