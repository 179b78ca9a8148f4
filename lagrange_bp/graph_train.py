"""Mini-batch training of a compiled graph (``GraphModel``): ``lbp.train`` dispatches here.

The same algorithm, options, history and results as ``train.train`` (CONVENTIONS §3): each
epoch shuffles the rows with the seeded generator, cuts mini-batches and applies the derived
gradient with the chosen update rule (``optimizers``); parameters are a dict name → array.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from .functions import get_loss
from .graph_model import GraphModel, GraphParams, check_graph_memory
from .model import Params
from .optimizers import Optimizer
from .train import TrainResult, _diverged, _positive


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


def _check_args(epochs: int, batch_size: int, lr: float, eval_every: int | None,
                patience: int | None, validation: object) -> None:  # fmt: skip
    _positive("epochs", epochs, int)
    _positive("batch_size", batch_size, int)
    _positive("lr", lr, float)
    if eval_every is not None:
        _positive("eval_every", eval_every, int)
    if patience is not None:
        _positive("patience", patience, int)
        if validation is None:
            raise ValueError("patience (early stopping) needs validation=(X_val, Y_val)")


def _pairs(params: GraphParams) -> Params:
    """The arrays as the one-element groups the optimizer walks (its slots follow this order)."""
    return cast(Params, [(a,) for a in params.values()])


def _start(
    model: GraphModel, params: GraphParams | None, seed: int, resume: dict[str, Any] | None,
    optimizer: str, opt: Optimizer,
) -> tuple[GraphParams, Optimizer, int, np.random.Generator]:  # fmt: skip
    """Our own copy of the parameters, the optimizer, the first epoch and the generator."""
    start = model.init_params(seed) if params is None else model.check_params(params)
    own = {k: np.array(v) for k, v in start.items()}
    rng = np.random.default_rng(seed)
    if resume is None:
        return own, opt, 1, rng
    if params is None:
        raise ValueError("resume needs the parameters it stopped with: params=result.params")
    if resume.get("optimizer", {}).get("name") != optimizer:
        raise ValueError(
            f"resume continues a run with its own optimizer "
            f"({resume.get('optimizer', {}).get('name')!r}), not {optimizer!r}"
        )
    rng.bit_generator.state = resume["rng"]
    resumed = Optimizer.from_state(resume["optimizer"])
    resumed.lr = opt.lr
    return own, resumed, int(resume["epoch"]) + 1, rng


def train_graph(
    model: GraphModel,
    X: np.ndarray,
    Y: np.ndarray,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 0.1,
    seed: int = 0,
    params: GraphParams | None = None,
    shuffle: bool = True,
    *,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_batch: Callable[[int, int, GraphParams], None] | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    patience: int | None = None,
    resume: dict[str, Any] | None = None,
    eval_every: int | None = None,
) -> TrainResult:
    """``train.train`` for a ``GraphModel`` (same arguments and result; params are dicts)."""
    _check_args(epochs, batch_size, lr, eval_every, patience, validation)
    X, Y = model.check_data(X, Y)
    if validation is not None:
        validation = model.check_data(*validation)
    check_graph_memory(model.spec, batch_size, model.dtype.itemsize)
    opt = Optimizer(optimizer, lr, momentum, tuple(betas), eps)  # type: ignore[arg-type]
    own, opt, first, rng = _start(model, params, seed, resume, optimizer, opt)
    history = _history(model, eval_every, validation)
    best: tuple[float, int, GraphParams] | None = None
    t0, epoch = time.perf_counter(), first - 1
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(first, first + epochs):
            order = rng.permutation(len(X)) if shuffle else np.arange(len(X))
            total = _epoch(model, own, X[order], Y[order], batch_size, opt, epoch, on_batch)
            metrics = _metrics(model, own, X, Y, total, epoch, first + epochs - 1, eval_every,
                               validation)  # fmt: skip
            metrics["seconds"] = time.perf_counter() - t0
            for key in history:
                history[key].append(metrics[key])
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            if patience is not None:
                if best is None or metrics["val_loss"] < best[0]:
                    best = (metrics["val_loss"], epoch, {k: v.copy() for k, v in own.items()})
                elif epoch - best[1] >= patience:
                    break
    state = {"epoch": epoch, "rng": rng.bit_generator.state, "optimizer": opt.state()}
    result = TrainResult(own, history, time.perf_counter() - t0, state)  # type: ignore[arg-type]
    if best is not None:
        result.params, result.best_epoch = best[2], best[1]  # type: ignore[assignment]
    return result


def _history(
    model: GraphModel, eval_every: int | None, validation: object
) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "seconds": []}
    classify = get_loss(model.spec.loss).classification
    if eval_every is not None:
        history["train_loss_full"] = []
        if classify:
            history["train_accuracy"] = []
    if validation is not None:
        history["val_loss"] = []
        if classify:
            history["val_accuracy"] = []
    return history


def _epoch(
    model: GraphModel, params: GraphParams, Xs: np.ndarray, Ys: np.ndarray, batch: int,
    opt: Optimizer, epoch: int, on_batch: Callable[[int, int, GraphParams], None] | None,
) -> float:  # fmt: skip
    """One pass over the shuffled rows; the mean of the batch losses."""
    n_batches, total = -(-len(Xs) // batch), 0.0
    for i in range(n_batches):
        Xb, Yb = Xs[i * batch : (i + 1) * batch], Ys[i * batch : (i + 1) * batch]
        if opt.name == "sgd":
            loss = model.sgd_step(params, Xb, Yb, opt.lr, check=False)
            opt.steps += 1
        else:
            loss, grads = model.loss_and_grad(params, Xb, Yb)
            opt.step(_pairs(params), _pairs(grads))
        total += loss * len(Xb)
        if not math.isfinite(loss):
            _diverged(epoch, i + 1, n_batches, opt.lr)
        if on_batch is not None:
            on_batch(epoch, i + 1, params)
    if not all(np.isfinite(a).all() for a in params.values()):
        _diverged(epoch, n_batches, n_batches, opt.lr)
    return total / len(Xs)


def _metrics(
    model: GraphModel, params: GraphParams, X: np.ndarray, Y: np.ndarray, train_loss: float,
    epoch: int, last: int, eval_every: int | None,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, float]:  # fmt: skip
    metrics = {"epoch": float(epoch), "train_loss": train_loss}
    classify = get_loss(model.spec.loss).classification
    if eval_every is not None:
        full = epoch % eval_every == 0 or epoch == last
        metrics["train_loss_full"] = model.loss(params, X, Y) if full else math.nan
        if classify:
            metrics["train_accuracy"] = graph_accuracy(model, params, X, Y) if full else math.nan
    if validation is not None:
        for key, value in evaluate_graph(model, params, *validation).items():
            metrics[f"val_{key}"] = value
    return metrics
