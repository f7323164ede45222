"""Evaluation figures (matplotlib, Agg): per-dimension radar, win-rate bars, training curves,
steerability (judged rating, and answer length, against requested level)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_dimension_radar(dimensions: Sequence[str], model: Sequence[float], baseline: Sequence[float] | None,
                         out: Path, *, low: float = 1.0, high: float = 5.0, labels=("model", "baseline")) -> Path | None:
    """Mean judge score per dimension on a radar (a bar chart when there are fewer than 3), each axis
    labelled with the model − baseline difference."""
    if not dimensions or all(math.isnan(v) for v in model):
        return None
    plt = _pyplot()
    names = [d.replace("_", "\n") for d in dimensions]
    if baseline is not None:
        names = [f"{n}\nΔ {m - b:+.2f}" if not math.isnan(m - b) else n
                 for n, m, b in zip(names, model, baseline)]
    series = [(labels[0], list(model), "tab:blue")]
    if baseline is not None:
        series.append((labels[1], list(baseline), "tab:gray"))
    if len(dimensions) < 3:
        fig, ax = plt.subplots(figsize=(4.5, 3.6))
        width = 0.8 / len(series)
        for j, (label, values, color) in enumerate(series):
            ax.bar([i + j * width for i in range(len(names))], values, width, label=label, color=color)
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(names))], names)
        ax.set_ylim(low, high)
        ax.legend(fontsize=8)
    else:
        angles = [2 * math.pi * i / len(names) for i in range(len(names))]
        fig, ax = plt.subplots(figsize=(4.8, 4.8), subplot_kw={"projection": "polar"})
        for label, values, color in series:
            closed = [v if not math.isnan(v) else low for v in values]
            ax.plot(angles + angles[:1], closed + closed[:1], color=color, label=label, linewidth=2)
            ax.fill(angles + angles[:1], closed + closed[:1], color=color, alpha=0.15)
        ax.set_xticks(angles, names, fontsize=8)
        ax.set_ylim(low, high)
        ax.set_yticks([low + (high - low) * k / 4 for k in range(1, 5)])
        ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.12), fontsize=8)
    ax.set_title("judge score per dimension (1–5)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_win_rates(metrics: dict[str, float], out: Path, *, title: str = "model vs baseline") -> Path | None:
    """Raw and length-controlled win rate (percent) with ±1 standard-error bars and the 50% line."""
    bars = [(name, metrics.get(f"winrate/{key}"), metrics.get(f"winrate/{key}_se"))
            for name, key in (("raw", "raw"), ("length-controlled", "lc"))]
    bars = [(n, v, s) for n, v, s in bars if v is not None and not math.isnan(v)]
    if not bars:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    values = [100 * v for _, v, _ in bars]
    errors = [100 * s if s is not None and not math.isnan(s) else 0.0 for _, _, s in bars]
    ax.bar([n for n, _, _ in bars], values, yerr=errors, capsize=6, color=["tab:blue", "tab:orange"][: len(bars)])
    for i, (v, e) in enumerate(zip(values, errors)):
        ax.text(i, v + e + 1.5, f"{v:.1f}%", ha="center", fontsize=9)
    ax.axhline(50, color="black", linestyle="--", linewidth=1)
    ax.set_ylim(0, 100)
    ax.set_ylabel("win rate (%)")
    n = metrics.get("winrate/n")
    ax.set_title(f"{title}" + (f" (n={int(n)})" if n and not math.isnan(n) else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


Curve = tuple[Sequence[float], Sequence[float], Sequence[float]]  # levels, mean ratings, standard errors


def plot_steering(trained: dict[str, Curve], base: dict[str, Curve] | None, out: Path, *, low: float = 1.0,
                  high: float = 5.0) -> Path | None:
    """Mean judge rating against the requested level, one line per dimension (±1 standard error),
    the trained model and the base model given the same prompts side by side on one rating axis."""
    panels = [("trained model", trained)] + ([("base model, same prompts", base)] if base else [])
    if not trained:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    names = list(trained)
    for ax, (title, curves) in zip(axes[0], panels):
        for j, name in enumerate(names):
            if name not in curves:
                continue
            levels, means, errors = curves[name]
            ax.errorbar(levels, means, yerr=[0.0 if math.isnan(e) else e for e in errors], marker="o", capsize=4,
                        color=colors(j % 10), label=name.replace("_", " "))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("requested level")
        ax.set_ylim(low, high)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"judge rating ({low:g}–{high:g})")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("steerability: rating of the answer vs requested level", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_training_curves(history: Path, out: Path) -> Path | None:
    """The training run's curves (``history.jsonl`` beside the model folder), redrawn."""
    from amopo.train.plots import plot_history

    lines = [line for line in history.read_text().splitlines() if line.strip()]
    if not lines:
        return None
    first = json.loads(lines[0])
    names = [k.split("/", 1)[1] for k in first if k.startswith("accuracy/")] or ["plain"]
    return plot_history(history, out, names)


def plot_steer_length(lengths: dict[str, dict[str, Curve]], ratings: dict[str, dict[str, Curve]],
                      tables: dict[str, Sequence[tuple[float, float]]], out: Path, *, low: float = 1.0,
                      high: float = 5.0) -> Path | None:
    """Per length dimension (verbosity), one row: answer length in tokens against the requested level
    (±1 standard error), the trained model and the base model on the same prompts, with the data's
    level-to-length mapping (mean tokens of the responses at each score) as the calibration line;
    beside it the judge's rating against the requested level, trained and base.
    ``lengths``/``ratings``: {"trained"|"base": {dimension: curve}}."""
    names = list(lengths.get("trained", {}))
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 2, figsize=(8.4, 3.6 * len(names)), squeeze=False)
    styles = {"trained": ("trained model", "tab:blue", "-"), "base": ("base model, same prompts", "tab:gray", "--")}
    for row, name in zip(axes, names):
        for panel, (ax, curves, ylabel) in enumerate(((row[0], lengths, "answer length (tokens)"),
                                                      (row[1], ratings, f"judge rating ({low:g}–{high:g})"))):
            for side, (label, color, line) in styles.items():
                if name not in curves.get(side, {}):
                    continue
                levels, means, errors = curves[side][name]
                ax.errorbar(levels, means, yerr=[0.0 if math.isnan(e) else e for e in errors], marker="o",
                            capsize=4, color=color, linestyle=line, label=label)
            if panel == 0 and tables.get(name):
                ax.plot([s for s, _ in tables[name]], [m for _, m in tables[name]], color="black", linestyle=":",
                        marker="x", label="data: mean tokens at each score")
            if panel == 1:
                ax.set_ylim(low, high)
            ax.set_xlabel(f"requested {name.replace('_', ' ')} level")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("steerability by length: achieved length and rating vs requested level", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
