"""Step 8: mini-batch training with the generated kernels — the textbook algorithm.

For each epoch: shuffle the rows with the seeded generator, cut them into mini-batches, and for
each batch apply θ ← θ − η ∂L/∂θ with the batch-averaged gradient (J is the batch mean). The last
batch is used as it is when B does not divide the sample count: its update averages over its own,
smaller number of rows.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .functions import get_loss
from .model import BufferSets, Model, Params, _finite, check_memory, empty_aligned
from .optimizers import Optimizer, pack_params

if TYPE_CHECKING:
    from .graph_model import GraphModel, GraphParams


class TrainingDiverged(ValueError):
    """The loss or the parameters became NaN or infinite."""


@dataclass
class TrainResult:
    """Trained parameters (a new list; the caller's arrays are untouched; for a ``Model``, views
    of one flat array, which the optimizer updates at once) and per-epoch history."""

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
    of the epoch), so ``on_batch`` may see them once before the error. The values of X and Y
    (finite; a classifier's rows of Y summing to 1) are checked as the first epoch reads them,
    which spares a pass over all the data: ValueError names what is wrong before any step
    uses the rows, though ``on_batch`` may have seen steps on earlier ones.
    """
    if not isinstance(model, Model):
        from .graph_model import GraphModel

        if not isinstance(model, GraphModel):
            raise TypeError(
                f"model must be a lagrange_bp.Model (from lbp.compile), got {type(model).__name__}"
            )
    _check_args(epochs, batch_size, lr, eval_every, patience, validation)
    X, Y = model.check_data(X, Y, values=False)  # the values as the first epoch reads them
    if validation is not None:
        validation = model.check_data(*validation)
    _check_memory(model, batch_size)
    theta, own = _own_params(model, params, seed)
    opt = Optimizer(optimizer, lr, momentum, tuple(betas), eps)  # type: ignore[arg-type]
    opt, first, rng = _start(opt, seed, params is not None, resume)
    n = len(X)
    batch, last = min(batch_size, n), n % batch_size if batch_size < n else 0
    # the sgd kernel's buffers and the gather buffers, this call's own: idle ones from an
    # earlier call (warm), or new ones; given back to the model when training ends
    kernel_key, gather_key = ("sgd_step", batch, last), ("gather", batch, X.shape[1:], Y.shape[1:])
    lent = None
    if opt.name == "sgd":
        lent = model._take(kernel_key) or model.new_buffers(*kernel_key)
    step = _stepper(model, own, theta, opt, batch, last, lent)
    batches = Batches(X, Y, batch, model._take(gather_key), model.check_data)
    history = _history(model, eval_every, validation)
    best: tuple[float, int, Any] | None = None
    t0, epoch = time.perf_counter(), first - 1
    # overflow on the way to divergence is reported once, by TrainingDiverged, not as warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(first, first + epochs):
            order = rng.permutation(n) if shuffle else None
            total = _epoch(own, theta, batches, order, step, opt, epoch, on_batch)
            final = first + epochs - 1
            metrics = _metrics(model, own, X, Y, total, epoch, final, eval_every, validation)
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
    if lent is not None:  # warm for the next call (not after errors)
        model._give(kernel_key, lent)
    model._give(gather_key, batches.buffers)
    state = {"epoch": epoch, "rng": rng.bit_generator.state, "optimizer": opt.state()}
    if len(_IDLE_BITS) < 8:
        _IDLE_BITS.append(rng.bit_generator)  # read; free for the next call's generator
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


def _own_params(model: Any, params: Any, seed: int) -> tuple[np.ndarray | None, Any]:
    """Our own copy of ``params`` (checked; ``model.init_params(seed)`` when None): a Model's
    as views of one flat array (returned first), which the optimizer steps on at once, looked
    through for NaN and inf in one pass; a GraphModel's as a dict."""
    if not isinstance(model, Model):
        return None, _copy(
            model.init_params(seed) if params is None else model.check_params(params)
        )
    if params is None:
        return pack_params(model.init_params(seed))
    theta, own = pack_params(model.check_params(params, finite=False))
    if not _finite(theta):
        model.check_params(params)  # raises, naming the array
        raise ValueError("params contain NaN or inf")
    return theta, own


#: bit generators of finished calls, for the next call's shuffling generator: building a PCG64
#: from a seed costs 50–150 µs when NumPy's code is out of cache (after an epoch of work),
#: setting a state 5–10× less; ``list.pop`` is atomic, so threads never share one
_IDLE_BITS: list[np.random.BitGenerator] = []


@functools.lru_cache(maxsize=64)
def _seeded(seed: int) -> Any:
    """The state ``np.random.default_rng(seed)`` starts from (read, never changed)."""
    return np.random.PCG64(seed).state


def _generator(seed: Any) -> np.random.Generator:
    """A generator in the very state ``np.random.default_rng(seed)`` starts from."""
    if type(seed) is not int:
        return np.random.default_rng(seed)
    try:
        bits = _IDLE_BITS.pop()
    except IndexError:
        return np.random.default_rng(seed)
    bits.state = _seeded(seed)
    return np.random.Generator(bits)


def _start(
    opt: Optimizer, seed: int, given: bool, resume: dict[str, Any] | None
) -> tuple[Optimizer, int, np.random.Generator]:
    """The optimizer, the first epoch and the shuffling generator: fresh, or where ``resume``
    stopped (with the learning rate given now)."""
    rng = _generator(seed)
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


Step = Callable[[np.ndarray, np.ndarray], float]


def _stepper(
    model: Any,
    params: Any,
    theta: np.ndarray | None,
    opt: Optimizer,
    batch: int,
    last: int,
    buffers: BufferSets | None,
) -> Step:
    """One training step on a batch (X_b, Y_b), in place on ``params``; returns J before it.

    "sgd" is the generated fused step, on ``buffers`` (the ``sgd_step`` kernel's). The other
    rules take ∂L/∂θ from the ``loss_and_grad`` kernel: for a ``Model`` (``params`` are views
    of the flat array ``theta``), written into one flat array of the same layout, so that
    ``Optimizer.step_flat`` updates every parameter at once; for a graph, as a dict, for
    ``Optimizer.step``.
    """
    if opt.name == "sgd":  # the fused step: θ ← θ − η ∂L/∂θ, J from its forward pass
        fused = model.stepper(batch, last, buffers)

        def sgd(Xb: np.ndarray, Yb: np.ndarray) -> float:
            loss = fused(params, Xb, Yb, opt.lr)
            opt.steps += 1
            return loss

        return sgd
    if theta is not None:
        fn = model.kernels["loss_and_grad"].fn
        grad, buffers = model.gradient_buffers(batch, last)
        shapes = [a.shape for pair in params for a in pair]

        def flat(Xb: np.ndarray, Yb: np.ndarray) -> float:
            loss = float(fn(params, Xb, Yb, buffers[len(Xb)])[0])
            opt.step_flat(theta, grad, shapes)
            return loss

        return flat

    def graph(Xb: np.ndarray, Yb: np.ndarray) -> float:
        loss, grads = model.loss_and_grad(params, Xb, Yb)
        opt.step(_groups(params), _groups(grads))
        return float(loss)

    return graph


#: shuffled rows are gathered at least this many at a time (a few small batches per take)
GATHER_ROWS = 256


class Batches:
    """An epoch's mini-batches (X_b, Y_b), in a given order of the rows or as they are.

    Shuffled rows are gathered (``take``) into two buffers allocated once, k batches at a time
    with k = max(1, GATHER_ROWS // batch): no shuffled copy of the data is made, the gathered
    rows are still in cache when the steps read them, and small batches do not pay a take
    each (on digits with batches of 32, one take per 8 batches makes ``lbp.train`` about 5%
    faster than one per batch, while batches of 200 are fastest gathered one by one). The
    last batch is smaller when the batch size does not divide the number of rows. A gathered
    batch is a view of the buffers: valid until the next one.
    """

    def __init__(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        batch: int,
        buffers: tuple[np.ndarray, np.ndarray] | None = None,
        check: Callable[[np.ndarray, np.ndarray], object] | None = None,
    ) -> None:
        """``buffers``: the gather buffers of an earlier ``Batches`` of the same batch size and
        row shapes (``self.buffers``), to use again; by default new ones. ``check(X_r, Y_r)``
        is called in the first epoch on the rows as they are read (each gathered chunk, or
        each batch in order), before they are yielded: in cache, instead of a pass over all
        of X and Y up front."""
        self.X, self.Y, self.batch, self.check = X, Y, batch, check
        rows = batch * max(1, GATHER_ROWS // batch)
        self.buffers: tuple[np.ndarray, np.ndarray] = buffers or (
            empty_aligned((rows, *X.shape[1:]), X.dtype),
            empty_aligned((rows, *Y.shape[1:]), Y.dtype),
        )

    def __len__(self) -> int:
        return -(-len(self.X) // self.batch)

    def __call__(self, order: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        X, Y, batch, n = self.X, self.Y, self.batch, len(self.X)
        check, self.check = self.check, None  # the first epoch only
        if order is None:
            for start in range(0, n, batch):
                Xb, Yb = X[start : start + batch], Y[start : start + batch]
                if check is not None:
                    check(Xb, Yb)
                yield Xb, Yb
            return
        xs_all, ys_all = self.buffers
        chunk = len(xs_all)
        for start in range(0, n, chunk):
            rows = order[start : start + chunk]  # mode "clip" (a permutation) is unbuffered
            xs = X.take(rows, 0, xs_all[: len(rows)], "clip")
            ys = Y.take(rows, 0, ys_all[: len(rows)], "clip")
            if check is not None:
                check(xs, ys)
            for first in range(0, len(rows), batch):
                yield xs[first : first + batch], ys[first : first + batch]


def _epoch(
    params: Any,
    theta: np.ndarray | None,
    batches: Batches,
    order: np.ndarray | None,
    step: Step,
    opt: Optimizer,
    epoch: int,
    on_batch: Callable[[int, int, Any], None] | None,
) -> float:
    """One pass over the rows, in ``order`` or as they are; the mean of the batch losses.
    ``theta``: the flat array that ``params`` are views of (a Model's), or None."""
    n_batches, total = len(batches), 0.0
    for i, (Xb, Yb) in enumerate(batches(order)):
        loss = step(Xb, Yb)
        total += loss * len(Xb)
        if not math.isfinite(loss):  # NaN parameters show in the next batch's J
            _diverged(epoch, i + 1, n_batches, opt.lr)
        if on_batch is not None:
            on_batch(epoch, i + 1, params)
    arrays = [theta] if theta is not None else [a for group in _groups(params) for a in group]
    if not all(_finite(a) for a in arrays):
        _diverged(epoch, n_batches, n_batches, opt.lr)
    return total / len(batches.X)


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
