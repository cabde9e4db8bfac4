"""Report figures as PNG files (matplotlib's object API with the Agg canvas: no pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medimg.files import write_atomic

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _finite(values) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def roc_figure(rocs: Mapping[str, dict], path: Path) -> Path:
    """ROC curves of several sets/classes, each with its pointwise bootstrap band."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for colour, (name, roc) in zip(COLOURS, rocs.items(), strict=False):
        ax.fill_between(
            roc["grid"], _finite(roc["low"]), _finite(roc["high"]), color=colour, alpha=0.2
        )
        ax.plot(roc["fpr"], roc["tpr"], color=colour, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC (95% bootstrap band)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(fig, path)


def pr_figure(prs: Mapping[str, dict], path: Path) -> Path:
    """Precision-recall curves with bootstrap bands and each set's prevalence as a baseline."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for colour, (name, pr) in zip(COLOURS, prs.items(), strict=False):
        ax.fill_between(
            pr["grid"], _finite(pr["low"]), _finite(pr["high"]), color=colour, alpha=0.2
        )
        ax.plot(pr["recall"], pr["precision"], color=colour, label=name, drawstyle="steps-post")
        ax.axhline(pr["prevalence"], color=colour, linestyle=":", linewidth=1)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return _save(fig, path)


def reliability_figure(curves: Mapping[str, dict], path: Path, n_bins: int = 10) -> Path:
    """Reliability diagram: observed frequency per probability bin with intervals, bin counts."""
    fig = Figure(figsize=(5, 6))
    ax, hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    for colour, (name, rel) in zip(COLOURS, curves.items(), strict=False):
        x, obs = np.array(rel["mean_predicted"]), np.array(rel["observed"])
        if "low" in rel:
            err = np.clip(np.vstack([obs - rel["low"], np.array(rel["high"]) - obs]), 0, None)
            ax.errorbar(x, obs, yerr=err, color=colour, marker="o", capsize=3, label=name)
        else:
            ax.plot(x, obs, color=colour, marker="o", label=name)
        hist.bar(x, rel["count"], width=0.8 / n_bins, color=colour, alpha=0.5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(ylabel="observed frequency", title=f"Reliability ({n_bins} equal-width bins)")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    hist.set(xlabel="predicted probability", ylabel="cases")
    return _save(fig, path)


def confusion_figure(panels: Sequence[Mapping], path: Path) -> Path:
    """Confusion matrices side by side; each panel has ``title``, ``matrix`` and ``labels``."""
    fig = Figure(figsize=(3.8 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        m, labels = np.asarray(panel["matrix"]), list(panel["labels"])
        ax.imshow(m, cmap="Blues")
        for (i, j), value in np.ndenumerate(m):
            colour = "white" if value > m.max() / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=12)
        ticks = list(range(len(labels)))
        ax.set(xticks=ticks, yticks=ticks, xticklabels=labels, yticklabels=labels)
        ax.set(xlabel="predicted", ylabel="reference", title=panel["title"])
    return _save(fig, path)


def forest_figure(subgroups: Mapping[str, dict], metric: str, overall: dict, path: Path) -> Path:
    """Forest plot of ``metric`` per subgroup with intervals; too-small groups in grey."""
    rows = [
        (f"{attr} = {group}", info)
        for attr, block in subgroups.items()
        for group, info in block.get("groups", {}).items()
        if metric in info["metrics"]
    ]
    fig = Figure(figsize=(6, 1.2 + 0.32 * max(len(rows), 1)))
    ax = fig.add_subplot()
    for i, (_, info) in enumerate(rows):
        m = info["metrics"][metric]
        low, high = _finite(m["ci"])
        colour = "#999999" if info["too_small"] else "#1f77b4"
        if np.isfinite([low, high]).all():
            ax.plot([low, high], [i, i], color=colour)
        ax.plot(_finite([m["value"]])[0], i, marker="s", color=colour)
    ax.axvline(
        _finite([overall["value"]])[0],
        color="#d62728",
        linestyle="--",
        linewidth=1,
        label="whole set",
    )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [f"{lab} (n={i['n_cases']}){' *' if i['too_small'] else ''}" for lab, i in rows]
    )
    ax.invert_yaxis()
    ax.set(xlabel=metric, title=f"{metric} by subgroup (* too small to say)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def comparison_figure(sets: Mapping[str, dict], metrics: Sequence[str], path: Path) -> Path:
    """Side-by-side point estimates with intervals of several metrics across sets."""
    fig = Figure(figsize=(1.2 + 1.3 * len(metrics), 4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(sets), 1)
    for k, (colour, (name, block)) in enumerate(zip(COLOURS, sets.items(), strict=False)):
        for i, metric in enumerate(metrics):
            m = block["metrics"].get(metric)
            if m is None:
                continue
            x = i - 0.4 + width * (k + 0.5)
            low, high = _finite(m["ci"])
            if np.isfinite([low, high]).all():
                ax.plot([x, x], [low, high], color=colour)
            ax.plot(
                x,
                _finite([m["value"]])[0],
                marker="o",
                color=colour,
                label=name if i == 0 else None,
            )
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels(metrics, rotation=30, ha="right")
    ax.set(title="Internal vs external (95% intervals)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _middle_slice(array) -> np.ndarray:
    array = np.asarray(array)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    return array[..., array.shape[-1] // 2] if array.ndim == 3 else array


def overlay_figure(cases: Sequence[Mapping], path: Path) -> Path:
    """Best, median and worst cases: middle slice with reference (green) and prediction (red).

    Each case is a mapping with ``title``, ``image``, ``reference`` and ``prediction`` arrays
    ((1,) spatial or spatial; the middle slice of the last axis is shown for 3D).
    """
    fig = Figure(figsize=(3.2 * max(len(cases), 1), 3.6))
    axes = fig.subplots(1, max(len(cases), 1), squeeze=False)[0]
    for ax, case in zip(axes, cases, strict=False):
        image = _middle_slice(case["image"]).astype(float)
        ax.imshow(image.T, cmap="gray", origin="lower")
        for key, colour in (("reference", "#00c000"), ("prediction", "#ff2020")):
            mask = _middle_slice(case[key]) > 0
            if mask.any():
                ax.contour(mask.T.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(case["title"], fontsize=9)
        ax.axis("off")
    fig.suptitle("green: reference, red: prediction", fontsize=9)
    return _save(fig, path)
