"""Step 8: mini-batch training with the generated kernels — the textbook algorithm.

For each epoch: shuffle the rows with the seeded generator, cut them into mini-batches, and for
each batch apply θ ← θ − η ∂L/∂θ with the batch-averaged gradient (J is the batch mean). The last
batch is used as it is when B does not divide the sample count: its update averages over its own,
smaller number of rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .functions import get_loss
from .model import Model, Params, check_memory
from .optimizers import Optimizer

if TYPE_CHECKING:
    from .graph_model import GraphModel, GraphParams


class TrainingDiverged(ValueError):
    """The loss or the parameters became NaN or infinite."""


@dataclass
class TrainResult:
    """Trained parameters (a new list; the caller's arrays are untouched) and per-epoch history."""

    params: Params
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    #: where training stopped, to continue exactly: ``train(..., params=r.params, resume=r.state)``
    state: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None  # with ``patience``: the epoch whose parameters were kept


def accuracy(model: Model, params: Params, X: np.ndarray, Y: np.ndarray) -> float:
    """Share of rows whose largest output is the target's largest entry (one-hot classes)."""
    return float(np.mean(model.forward(params, X).argmax(axis=1) == np.asarray(Y).argmax(axis=1)))


def evaluate(
    model: Model | GraphModel, params: Params | GraphParams, X: np.ndarray, Y: np.ndarray
) -> dict[str, float]:
    """Loss J on (X, Y), and accuracy when the loss is a classification loss (cross-entropy)."""
    if not isinstance(model, Model):  # a compiled graph: params are a dict
        from .graph_train import evaluate_graph

        return evaluate_graph(model, params, X, Y)  # type: ignore[arg-type]
    assert not isinstance(params, dict)
    out = {"loss": model.loss(params, X, Y)}
    if get_loss(model.spec.loss).classification:
        out["accuracy"] = accuracy(model, params, X, Y)
    return out


def _positive(name: str, value: object, kind: type) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or (kind is int and not isinstance(value, int))
        or not (value > 0 and math.isfinite(value))
    ):
        raise ValueError(
            f"{name} must be a positive {'number' if kind is float else 'integer'}, got {value!r}"
        )


def train(
    model: Model | GraphModel,
    X: np.ndarray,
    Y: np.ndarray,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 0.1,
    seed: int = 0,
    params: Params | GraphParams | None = None,
    shuffle: bool = True,
    *,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_batch: Callable[[int, int, Params], None] | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    patience: int | None = None,
    resume: dict[str, Any] | None = None,
    eval_every: int | None = None,
) -> TrainResult:
    """Train with mini-batches; ``params`` default to ``model.init_params(seed)``.

    ``optimizer`` is the update rule on top of the derived gradient (``optimizers``): "sgd"
    (θ ← θ − η ∂L/∂θ, the generated fused step), "momentum", "nesterov" (``momentum``) or
    "adam" (``betas``, ``eps``), each as ``torch.optim`` defines it. ``validation=(X_val,
    Y_val)`` adds validation loss (and accuracy) to the history; with ``patience``, training
    stops when the validation loss has not improved for that many epochs and the best epoch's
    parameters are returned. ``resume=result.state`` (with ``params=result.params``) continues
    a run exactly where it stopped: the shuffling generator and the optimizer's state go on.
    The history's ``train_loss`` is the epoch's mean of the batch losses, each computed by the
    step from the forward pass it makes anyway (as scikit-learn's ``loss_curve_``): no extra
    pass over the data. ``eval_every=k`` adds a full pass over the training data every k-th
    epoch (and the last): ``train_loss_full`` and, for classification, ``train_accuracy``
    (NaN at the other epochs). Validation data are evaluated after every epoch.
    ``on_epoch(epoch, metrics)`` is called after every epoch (progress display), and
    ``on_batch(epoch, batch, params)`` after every step (read ``params``, do not keep them).
    Raises ``TrainingDiverged`` naming the epoch and batch if the loss or the parameters become
    NaN/inf: a step that makes the parameters NaN shows in the next batch's J (and at the end
    of the epoch), so ``on_batch`` may see them once before the error.
    """
    from .graph_model import GraphModel  # a compiled graph trains in graph_train

    if isinstance(model, GraphModel):
        from .graph_train import train_graph

        options: dict[str, Any] = dict(
            validation=validation, on_epoch=on_epoch, on_batch=on_batch, optimizer=optimizer,
            momentum=momentum, betas=betas, eps=eps, patience=patience, resume=resume,
            eval_every=eval_every,
        )  # fmt: skip
        graph_params: Any = params
        return train_graph(
            model, X, Y, epochs, batch_size, lr, seed, graph_params, shuffle, **options
        )
    assert not isinstance(params, dict)
    if not isinstance(model, Model):
        raise TypeError(
            f"model must be a lagrange_bp.Model (from lbp.compile), got {type(model).__name__}"
        )
    _positive("epochs", epochs, int)
    _positive("batch_size", batch_size, int)
    _positive("lr", lr, float)
    if eval_every is not None:
        _positive("eval_every", eval_every, int)
    if patience is not None:
        _positive("patience", patience, int)
        if validation is None:
            raise ValueError("patience (early stopping) needs validation=(X_val, Y_val)")
    X, Y = model.check_data(X, Y)
    if validation is not None:
        validation = model.check_data(*validation)
    check_memory(model.spec, batch_size, model.dtype.itemsize)
    given = params is not None
    start_params = model.init_params(seed) if params is None else model.check_params(params)
    params = [(np.array(W), np.array(b)) for W, b in start_params]  # our own copies
    rng = np.random.default_rng(seed)
    opt = Optimizer(optimizer, lr, momentum, tuple(betas), eps)  # type: ignore[arg-type]
    first = 1
    if resume is not None:
        if not given:
            raise ValueError("resume needs the parameters it stopped with: params=result.params")
        if resume.get("optimizer", {}).get("name") != optimizer:
            raise ValueError(
                f"resume continues a run with its own optimizer "
                f"({resume.get('optimizer', {}).get('name')!r}), not {optimizer!r}"
            )
        rng.bit_generator.state = resume["rng"]
        opt = Optimizer.from_state(resume["optimizer"])
        opt.lr = lr
        first = int(resume["epoch"]) + 1
    n = len(X)
    n_batches = -(-n // batch_size)
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
    best: tuple[float, int, Params] | None = None
    t0 = time.perf_counter()
    epoch = first - 1
    sizes = {min(batch_size, n), n % batch_size} if opt.name == "sgd" else set()
    steps = {size: model.stepper(size) for size in sizes if size}  # full and last batches
    # overflow on the way to divergence is reported once, by TrainingDiverged, not as warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(first, first + epochs):
            if shuffle:  # take: a row gather, faster than fancy indexing
                order = rng.permutation(n)
                Xs, Ys = X.take(order, axis=0), Y.take(order, axis=0)
            else:
                Xs, Ys = X, Y
            total = 0.0  # Σ over batches of J_batch × rows: the epoch's mean loss
            for i in range(n_batches):
                rows = slice(i * batch_size, (i + 1) * batch_size)
                Xb, Yb = Xs[rows], Ys[rows]
                if opt.name == "sgd":  # the fused step: θ ← θ − η ∂L/∂θ, J from its forward pass
                    loss = steps[len(Xb)](params, Xb, Yb, lr)
                    opt.steps += 1
                else:
                    loss, grads = model.loss_and_grad(params, Xb, Yb)
                    opt.step(params, grads)
                total += loss * len(Xb)
                if not math.isfinite(loss):  # NaN parameters show in the next batch's J
                    _diverged(epoch, i + 1, n_batches, lr)
                if on_batch is not None:
                    on_batch(epoch, i + 1, params)
            if not all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in params):
                _diverged(epoch, n_batches, n_batches, lr)
            metrics = {"epoch": float(epoch), "train_loss": total / n}
            if eval_every is not None:
                last = epoch == first + epochs - 1
                full = epoch % eval_every == 0 or last
                metrics["train_loss_full"] = model.loss(params, X, Y) if full else math.nan
                if classify:
                    metrics["train_accuracy"] = accuracy(model, params, X, Y) if full else math.nan
            if validation is not None:
                for key, value in evaluate(model, params, *validation).items():
                    metrics[f"val_{key}"] = value
            metrics["seconds"] = time.perf_counter() - t0
            for key in history:
                history[key].append(metrics[key])
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            if patience is not None:
                if best is None or metrics["val_loss"] < best[0]:
                    best = (metrics["val_loss"], epoch, [(W.copy(), b.copy()) for W, b in params])
                elif epoch - best[1] >= patience:
                    break
    state = {"epoch": epoch, "rng": rng.bit_generator.state, "optimizer": opt.state()}
    result = TrainResult(params, history, time.perf_counter() - t0, state)
    if best is not None:
        result.params, result.best_epoch = best[2], best[1]
    return result


def _diverged(epoch: int, batch: int, n_batches: int, lr: float) -> None:
    raise TrainingDiverged(
        f"training diverged at epoch {epoch}, batch {batch} of {n_batches}: the parameters or "
        f"the loss became NaN or infinite with learning rate {lr:g}; try a smaller learning "
        f"rate (e.g. {lr / 10:g})"
    )
