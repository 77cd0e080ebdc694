"""The paper's figures as PNG files: accuracy/loss curves, ROC curve, confusion matrix, the
cross-forger AUC grid; and predict's heatmap of one face.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend). ``path`` may have any
name (the stages write to temporary siblings); the format is always PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from faceswap_ela.outputs import atomic_path

DPI = 120


def _save(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})


def history_figure(history: pd.DataFrame, path: str | os.PathLike, best_epoch: int | None = None) -> None:
    """Accuracy and loss per epoch, training and validation side by side."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, name in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        ax.plot(history["epoch"], history[name], "o-", label=f"train {name}")
        ax.plot(history["epoch"], history[f"val_{name}"], "s--", label=f"validation {name}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def roc_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "ROC, test split",
) -> None:
    """ROC curves (label -> (fpr, tpr)) with the chance diagonal."""
    fig = Figure(figsize=(4.8, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    _save(fig, path)


def lines_figure(
    frame: pd.DataFrame,
    x: str,
    panels: Mapping[str, Sequence[str]],
    path: str | os.PathLike,
    xlabel: str | None = None,
) -> None:
    """One panel per title, each plotting the named columns of ``frame`` against ``x``."""
    fig = Figure(figsize=(4.6 * len(panels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, columns) in zip(axes, panels.items(), strict=True):
        for column in columns:
            if column in frame and frame[column].notna().any():
                ax.plot(frame[x], frame[column], "o-", label=column)
        ax.set_xlabel(xlabel or x)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, path)


def confusion_figure(
    matrix: Sequence[Sequence[int]], path: str | os.PathLike, classes: Sequence[str] = ("real", "fake")
) -> None:
    """Counts (and row shares) with actual classes as rows and predictions as columns."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig = Figure(figsize=(4.6, 4.0), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of actual class")
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if shares[row, col] > 0.5 else "black"
        ax.text(col, row, f"{count}\n{shares[row, col]:.1%}", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix, test split")
    _save(fig, path)


def auc_grid_figure(
    aucs: pd.DataFrame,
    path: str | os.PathLike,
    boxed: pd.DataFrame | None = None,
    title: str = "AUC by training recipe (rows) and test set (columns)",
) -> None:
    """A heat map of AUC (rows x columns of ``aucs``, NaN as n/a) from chance (0.5, and below) to
    1, each cell annotated; the cells ``boxed`` marks True are outlined."""
    values = aucs.to_numpy(dtype=np.float64)
    rows, cols = values.shape
    fig = Figure(figsize=(2.6 + 1.05 * cols, 1.4 + 0.42 * rows), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.5, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="AUC (0.5: chance)")
    for (row, col), value in np.ndenumerate(values):
        text = "n/a" if np.isnan(value) else f"{value:.3f}"
        colour = "white" if value < 0.8 else "black"  # viridis is dark below 0.8
        ax.text(col, row, text, ha="center", va="center", color=colour, fontsize="small")
    if boxed is not None:
        for row, col in zip(*np.nonzero(boxed.to_numpy(dtype=bool)), strict=True):
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        title += "\nboxed: the forger the row was trained on"
    ax.set_xticks(range(cols), aucs.columns, rotation=30, ha="right")
    ax.set_yticks(range(rows), aucs.index)
    ax.set_title(title, fontsize="medium")
    _save(fig, path)


def heatmap(
    path: str | os.PathLike,
    crop: np.ndarray,
    ela_rgb: np.ndarray,
    p_fake: float,
    label: str,
    photo: str,
    index: int,
    rois: int = 1,
) -> None:
    """A PNG of the crop and its ELA image (what the network sees) side by side, the score in the
    title; with several ROIs the first is shown and the score is their mean. Written atomically."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    mean = f", mean of {rois} ROIs" if rois > 1 else ""
    fig.suptitle(f"{photo} face {index}: p(fake) = {p_fake:.3f} ({label}{mean})")
    for ax, image, title in zip(fig.subplots(1, 2), (crop, ela_rgb), ("crop", "ELA"), strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    with atomic_path(path) as tmp:
        _save(fig, tmp, dpi=100)
