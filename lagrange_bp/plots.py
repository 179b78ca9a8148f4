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
    axes[0].plot(history["epoch"], history["train_loss"], label="train (mean of batch losses)")
    if "val_loss" in history:
        axes[0].plot(history["epoch"], history["val_loss"], label="test")
    axes[0].set(xlabel="epoch", ylabel="loss J", yscale="log", title="loss")
    axes[0].legend()
    if acc:
        if "train_accuracy" in history:  # only when train(eval_every=...) asked for it
            epochs = [e for e, a in zip(history["epoch"], history["train_accuracy"]) if a == a]
            shown = [100 * a for a in history["train_accuracy"] if a == a]  # NaN: not evaluated
            axes[1].plot(epochs, shown, label="train")
        axes[1].plot(history["epoch"], [100 * a for a in history["val_accuracy"]], label="test")
        axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_residuals(
    steps: list[int], residuals: dict[str, list[float]], path: str | Path | None = None
) -> Any:
    """Left: the KKT residuals ∂L/∂λ and ∂L/∂x against the SGD step, each relative to the size
    of the terms it compares (so float64's rounding unit ε is the right yardstick, drawn
    dashed); an exact zero cannot sit on a log axis and is drawn as a triangle on the bottom
    edge, labelled as such. Right: the gradient norm ‖∂L/∂θ‖, the one condition training moves.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    floor = 1e-20
    for name, values in residuals.items():
        ax = left if "residual" in name else right
        v = np.asarray(values, dtype=float)
        (line,) = ax.plot(steps, np.where(v > 0, v, np.nan), label=name)
        zero = v == 0
        if ax is left and zero.any():
            ax.plot(
                np.asarray(steps)[zero],
                np.full(int(zero.sum()), floor),
                "v",
                color=line.get_color(),
                clip_on=False,
                label=f"{name}: exactly 0",
            )
    left.axhline(
        np.finfo(float).eps,
        color="grey",
        linestyle="--",
        linewidth=1,
        label="float64 rounding unit ε",
    )
    left.set(
        xlabel="SGD step",
        ylabel="max |residual| / size of its terms (log)",
        yscale="log",
        ylim=(floor, 1),
        title="∂L/∂λ = 0 and ∂L/∂x = 0: solved exactly, up to rounding",
    )
    right.set(
        xlabel="SGD step",
        ylabel="norm (log)",
        yscale="log",
        title="‖∂L/∂θ‖ → 0 is what training approaches",
    )
    left.legend(fontsize="small")
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
