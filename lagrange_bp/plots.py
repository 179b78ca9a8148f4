"""Pictures of training: learning curves, the KKT residuals along training, a confusion matrix.

Each function returns the matplotlib Figure and, given ``path``, also writes it as a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path | None) -> Any:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def plot_history(
    history: dict[str, list[float]], path: str | Path | None = None, title: str = ""
) -> Any:
    """Loss per epoch (train, test) and, for classification, accuracy per epoch."""
    plt = _pyplot()
    acc = "val_accuracy" in history
    fig, axes = plt.subplots(1, 2 if acc else 1, figsize=(10 if acc else 5.5, 4))
    axes = np.atleast_1d(axes)
    axes[0].plot(history["epoch"], history["train_loss"], label="train")
    if "val_loss" in history:
        axes[0].plot(history["epoch"], history["val_loss"], label="test")
    axes[0].set(xlabel="epoch", ylabel="loss J", yscale="log", title="loss")
    axes[0].legend()
    if acc:
        axes[1].plot(history["epoch"], [100 * a for a in history["train_accuracy"]], label="train")
        axes[1].plot(history["epoch"], [100 * a for a in history["val_accuracy"]], label="test")
        axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_residuals(
    steps: list[int], residuals: dict[str, list[float]], path: str | Path | None = None
) -> Any:
    """Left: KKT residuals against the SGD step (exact zeros drawn at 1e-20, the dashed line is
    float64's rounding unit); right: the gradient norm."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    floor = 1e-20
    for name, values in residuals.items():
        ax = left if "residual" in name else right
        ax.plot(steps, np.maximum(values, floor), label=name)
    left.axhline(
        np.finfo(float).eps,
        color="grey",
        linestyle="--",
        linewidth=1,
        label="float64 rounding unit",
    )
    left.set(
        xlabel="SGD step",
        ylabel="max |residual| (log)",
        yscale="log",
        ylim=(floor / 10, 1),
        title="∂L/∂λ = 0 and ∂L/∂x = 0 hold at every step",
    )
    right.set(xlabel="SGD step", ylabel="norm (log)", yscale="log", title="‖∂L/∂θ‖ falls")
    left.legend()
    right.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str | Path | None = None) -> Any:
    """A confusion matrix with counts in the cells (rows: true class, columns: predicted)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            color="white" if v > matrix.max() / 2 else "black",
            fontsize=8,
        )
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix",
    )
    fig.tight_layout()
    return _save(fig, path)
