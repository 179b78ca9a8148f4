"""Evaluation of a compiled graph (``GraphModel``): its loss and accuracy over several
outputs. ``lbp.train`` trains graphs and chains with one loop (``train``)."""

from __future__ import annotations

import numpy as np

from .functions import get_loss
from .graph_model import GraphModel, GraphParams


def graph_accuracy(model: GraphModel, params: GraphParams, X: np.ndarray, Y: np.ndarray) -> float:
    """Share of (row, output) pairs whose largest output entry is the target's largest one."""
    out = model.split_targets(model.forward(params, X))
    hits = [
        np.mean(o.argmax(axis=1) == y.argmax(axis=1))
        for o, y in zip(out, model.split_targets(np.asarray(Y)))
    ]
    return float(np.mean(hits))


def evaluate_graph(
    model: GraphModel, params: GraphParams, X: np.ndarray, Y: np.ndarray
) -> dict[str, float]:
    """Loss J on (X, Y), and accuracy for a classification loss (cross-entropy)."""
    out = {"loss": model.loss(params, X, Y)}
    if get_loss(model.spec.loss).classification:
        out["accuracy"] = graph_accuracy(model, params, X, Y)
    return out
