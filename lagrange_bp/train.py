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
    from .graph_model import GraphModel

    if not isinstance(model, (Model, GraphModel)):
        raise TypeError(
            f"model must be a lagrange_bp.Model (from lbp.compile), got {type(model).__name__}"
        )
    _check_args(epochs, batch_size, lr, eval_every, patience, validation)
    X, Y = model.check_data(X, Y)
    if validation is not None:
        validation = model.check_data(*validation)
    _check_memory(model, batch_size)
    given: Any = params  # a list of (W, b) for a Model, a dict for a GraphModel: checked here
    own = _copy(model.init_params(seed) if given is None else model.check_params(given))
    opt = Optimizer(optimizer, lr, momentum, tuple(betas), eps)  # type: ignore[arg-type]
    opt, first, rng = _start(opt, seed, params is not None, resume)
    n = len(X)
    sizes = {min(batch_size, n), n % batch_size} if opt.name == "sgd" else set()
    steps = {size: model.stepper(size) for size in sizes if size}  # full and last batches
    history = _history(model, eval_every, validation)
    best: tuple[float, int, Any] | None = None
    t0, epoch = time.perf_counter(), first - 1
    # overflow on the way to divergence is reported once, by TrainingDiverged, not as warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(first, first + epochs):
            if shuffle:  # take: a row gather, faster than fancy indexing
                order = rng.permutation(n)
                Xs, Ys = X.take(order, axis=0), Y.take(order, axis=0)
            else:
                Xs, Ys = X, Y
            total = _epoch(model, own, Xs, Ys, batch_size, opt, steps, epoch, on_batch)
            last = first + epochs - 1
            metrics = _metrics(model, own, X, Y, total, epoch, last, eval_every, validation)
            metrics["seconds"] = time.perf_counter() - t0
            for key in history:
                history[key].append(metrics[key])
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            if patience is not None:
                if best is None or metrics["val_loss"] < best[0]:
                    best = (metrics["val_loss"], epoch, _copy(own))
                elif epoch - best[1] >= patience:
                    break
    state = {"epoch": epoch, "rng": rng.bit_generator.state, "optimizer": opt.state()}
    result = TrainResult(own, history, time.perf_counter() - t0, state)
    if best is not None:
        result.params, result.best_epoch = best[2], best[1]
    return result


def _check_args(
    epochs: int,
    batch_size: int,
    lr: float,
    eval_every: int | None,
    patience: int | None,
    validation: object,
) -> None:
    _positive("epochs", epochs, int)
    _positive("batch_size", batch_size, int)
    _positive("lr", lr, float)
    if eval_every is not None:
        _positive("eval_every", eval_every, int)
    if patience is not None:
        _positive("patience", patience, int)
        if validation is None:
            raise ValueError("patience (early stopping) needs validation=(X_val, Y_val)")


def _check_memory(model: Model | GraphModel, batch: int) -> None:
    if isinstance(model, Model):
        check_memory(model.spec, batch, model.dtype.itemsize)
    else:
        from .graph_model import check_graph_memory

        check_graph_memory(model.spec, batch, model.dtype.itemsize)


def _copy(params: Any) -> Any:
    """Our own copy: a list of (W, b) pairs, or a compiled graph's dict name → array."""
    if isinstance(params, dict):
        return {name: np.array(a) for name, a in params.items()}
    return [(np.array(W), np.array(b)) for W, b in params]


def _groups(params: Any) -> Params:
    """The arrays in the groups the optimizer walks: (W^k, b^k) pairs, or one per graph name."""
    if isinstance(params, dict):
        return [(a,) for a in params.values()]  # type: ignore[misc]
    return list(params)


def _start(
    opt: Optimizer, seed: int, given: bool, resume: dict[str, Any] | None
) -> tuple[Optimizer, int, np.random.Generator]:
    """The optimizer, the first epoch and the shuffling generator: fresh, or where ``resume``
    stopped (with the learning rate given now)."""
    rng = np.random.default_rng(seed)
    if resume is None:
        return opt, 1, rng
    if not given:
        raise ValueError("resume needs the parameters it stopped with: params=result.params")
    if resume.get("optimizer", {}).get("name") != opt.name:
        raise ValueError(
            f"resume continues a run with its own optimizer "
            f"({resume.get('optimizer', {}).get('name')!r}), not {opt.name!r}"
        )
    rng.bit_generator.state = resume["rng"]
    resumed = Optimizer.from_state(resume["optimizer"])
    resumed.lr = opt.lr
    return resumed, int(resume["epoch"]) + 1, rng


def _history(model: Any, eval_every: int | None, validation: object) -> dict[str, list[float]]:
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
    model: Any,
    params: Any,
    Xs: np.ndarray,
    Ys: np.ndarray,
    batch: int,
    opt: Optimizer,
    steps: dict[int, Callable[[Any, np.ndarray, np.ndarray, float], float]],
    epoch: int,
    on_batch: Callable[[int, int, Any], None] | None,
) -> float:
    """One pass over the (shuffled) rows; the mean of the batch losses."""
    n_batches, total = -(-len(Xs) // batch), 0.0
    for i in range(n_batches):
        Xb, Yb = Xs[i * batch : (i + 1) * batch], Ys[i * batch : (i + 1) * batch]
        if opt.name == "sgd":  # the fused step: θ ← θ − η ∂L/∂θ, J from its forward pass
            loss = steps[len(Xb)](params, Xb, Yb, opt.lr)
            opt.steps += 1
        else:
            loss, grads = model.loss_and_grad(params, Xb, Yb)
            opt.step(_groups(params), _groups(grads))
        total += loss * len(Xb)
        if not math.isfinite(loss):  # NaN parameters show in the next batch's J
            _diverged(epoch, i + 1, n_batches, opt.lr)
        if on_batch is not None:
            on_batch(epoch, i + 1, params)
    if not all(np.isfinite(a).all() for group in _groups(params) for a in group):
        _diverged(epoch, n_batches, n_batches, opt.lr)
    return total / len(Xs)


def _metrics(
    model: Any,
    params: Any,
    X: np.ndarray,
    Y: np.ndarray,
    train_loss: float,
    epoch: int,
    last: int,
    eval_every: int | None,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, float]:
    """The epoch's row of the history: the batch-loss mean, and what evaluation was asked."""
    metrics = {"epoch": float(epoch), "train_loss": train_loss}
    if eval_every is not None:
        full = epoch % eval_every == 0 or epoch == last
        values = evaluate(model, params, X, Y) if full else {}
        metrics["train_loss_full"] = values.get("loss", math.nan)
        if get_loss(model.spec.loss).classification:
            metrics["train_accuracy"] = values.get("accuracy", math.nan)
    if validation is not None:
        for key, value in evaluate(model, params, *validation).items():
            metrics[f"val_{key}"] = value
    return metrics


def _diverged(epoch: int, batch: int, n_batches: int, lr: float) -> None:
    raise TrainingDiverged(
        f"training diverged at epoch {epoch}, batch {batch} of {n_batches}: the parameters or "
        f"the loss became NaN or infinite with learning rate {lr:g}; try a smaller learning "
        f"rate (e.g. {lr / 10:g})"
    )
