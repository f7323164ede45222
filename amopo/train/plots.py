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
    panels = [("loss", ["loss"]), ("accuracy", [f"accuracy/{n}" for n in names]),
              ("margin (β·ā_w − β·ā_l)", [f"margin/{n}" for n in names])]
    if any(f"alpha/{n}" in records[0] for n in names):
        panels.append(("dimension weight α", [f"alpha/{n}" for n in names]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key in records[0]:
                ax.plot(steps, [r[key] for r in records], label=key.split("/", 1)[-1])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
