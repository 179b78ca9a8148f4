"""scikit-learn estimators on the derived kernels: LagrangeMLPClassifier, LagrangeMLPRegressor.

They take scikit-learn's ``MLPClassifier``/``MLPRegressor`` parameter names, so that a
pipeline, a grid search or a cross-validation written for scikit-learn runs unchanged on the
network whose training step lagrange_bp derived from the KKT conditions and proved; the
fitted network is an ordinary ``NetworkSpec`` (``spec_``) with parameters in both layouts
(``coefs_``/``intercepts_`` as scikit-learn's, ``params_`` as ``lbp.compile``'s), so it can be
derived (``derivation_``), verified and trained further with the rest of the package.

How the parameters map onto the package (deviations from scikit-learn are marked ≠):

================================  ============================================================
scikit-learn parameter            lagrange_bp
================================  ============================================================
hidden_layer_sizes                ``NetworkSpec.widths`` = (n_features, *hidden, n_outputs)
activation                        hidden activations: identity, logistic (= sigmoid), tanh,
                                  relu, and the package's own names (sigmoid, softplus,
                                  softmax) or an expression in z
(output layer)                    classifier softmax + cross_entropy (also for 2 classes ≠);
                                  regressor identity + mse
solver="sgd"                      optimizer "nesterov" (``nesterovs_momentum=True``, default),
                                  "momentum" (``nesterovs_momentum=False``), "sgd" (momentum 0)
solver="adam"                     optimizer "adam" (``beta_1``, ``beta_2``, ``epsilon``) ≠ ε
solver="momentum"/"nesterov"      the package's optimizer of that name, with ``momentum``
solver="lbfgs"                    not supported ≠
alpha                             L2 penalty: ``NetworkSpec.weight_decay`` α = alpha / batch
                                  size (scikit-learn's batch objective adds
                                  alpha/(2 n_batch) Σ‖W‖²), fixed at the first fit (≠: a
                                  smaller last batch keeps α, where scikit-learn divides by
                                  its own size; a warm start with another alpha is refused);
                                  default 0.0 ≠ 1e-4
batch_size                        "auto" = min(200, n_samples), as scikit-learn
learning_rate_init                lr η (constant; no ``learning_rate`` schedules ≠)
max_iter                          epochs
momentum                          μ (must be < 1 ≠)
random_state                      ``seed`` of ``init_params`` and of the shuffling generator
tol, n_iter_no_change             scikit-learn's stopping rule, on the epoch's training loss
early_stopping, validation_f...   scikit-learn's: held-out accuracy (R²) with tol, best kept
shuffle, verbose, warm_start      as scikit-learn
dtype (ours)                      ``lbp.compile(spec, dtype)``: "float64" or "float32"
================================  ============================================================

Why the training loop is written here rather than calling ``lbp.train`` once per epoch: the
estimator steps as ``lbp.train`` does — the fused ``sgd_step`` kernel for plain SGD, otherwise
the ``loss_and_grad`` kernel and ``Optimizer.step_flat`` on the parameters held in one flat
array, with the same shuffling generator — so its parameters equal ``lbp.train``'s, step for
step, for the same seed (a test checks it); but it checks and copies the data and the
parameters once per ``fit`` instead of once per epoch, and stops by scikit-learn's rules.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    type_of_target,
)
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .functions import ACTIVATIONS
from .kkt import Derivation, derive
from .model import DTYPES, Model, Params, _finite, check_memory
from .model import compile as compile_model
from .optimizers import Optimizer, pack_params
from .spec import MAX_EXACT_WEIGHTS, NetworkSpec
from .train import Batches, TrainingDiverged

try:  # scikit-learn ≥ 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn: the estimator method

    def _validate_data(estimator: Any, *args: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(*args, **kwargs)


__all__ = ["LagrangeMLPClassifier", "LagrangeMLPRegressor"]

SOLVERS = ("sgd", "adam", "momentum", "nesterov")
#: scikit-learn's activation names that differ from the package's
SKLEARN_ACTIVATIONS = {"logistic": "sigmoid"}
#: predictions run in chunks of this many rows, so that the forward buffers stay bounded
PREDICT_CHUNK = 8192
#: compiled models kept (per network and dtype); compiling takes 10-400 ms
MAX_COMPILED = 16

_compiled_models: OrderedDict[tuple[NetworkSpec, str], Model] = OrderedDict()
_compiled_lock = threading.Lock()


def _compiled(spec: NetworkSpec, dtype: str) -> Model:
    """The compiled model of ``spec``, shared by every estimator of this network and dtype.

    Sharing is safe because the estimators call the generated kernels with buffers of their
    own (``Model.new_buffers``) and never the model's methods that keep buffers.
    """
    key = (spec, dtype)
    with _compiled_lock:
        if key in _compiled_models:
            _compiled_models.move_to_end(key)
            return _compiled_models[key]
    model = compile_model(spec, dtype)
    with _compiled_lock:
        _compiled_models[key] = model
        while len(_compiled_models) > MAX_COMPILED:
            _compiled_models.popitem(last=False)
    return model


@lru_cache(maxsize=4)
def _derivation(spec: NetworkSpec) -> Derivation:
    """The exact derivation depends on the network only, not on the fitted values: one per spec."""
    return derive(spec)


def _buffers(model: Model, kernel: str, batch: int) -> tuple[np.ndarray, ...]:
    return tuple(np.empty(shape, model.dtype) for shape in model.buffer_shapes(kernel, batch))


@dataclass(frozen=True)
class _Config:
    """The hyperparameters, checked, in the package's terms."""

    hidden: tuple[int, ...]
    activation: str
    optimizer: str
    momentum: float
    betas: tuple[float, float]
    eps: float
    lr: float
    dtype: str
    max_iter: int
    n_iter_no_change: float
    tol: float
    seed: int


_Targets = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(float(value))
    )


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


class _LagrangeMLP(BaseEstimator):
    """The shared fit / partial_fit / predict machinery; see the subclasses."""

    _output_activation: ClassVar[str]
    _loss: ClassVar[str]
    # fitted attributes (annotations only: they exist once fit has succeeded)
    spec_: NetworkSpec
    _alpha: float  # the alpha that gave spec_.weight_decay
    coefs_: list[np.ndarray]
    intercepts_: list[np.ndarray]
    n_features_in_: int
    n_outputs_: int
    n_layers_: int
    out_activation_: str
    n_iter_: int
    t_: int
    loss_: float
    loss_curve_: list[float]
    best_loss_: float | None
    validation_scores_: list[float] | None
    best_validation_score_: float | None
    _no_improvement_count: int
    _optimizer: Optimizer
    _rng: np.random.Generator

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: int | np.random.RandomState | None = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int | float = 10,
        dtype: str = "float64",
    ) -> None:
        # scikit-learn's rule: store the parameters as given; they are checked by fit
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    # --- the fitted network in the package's terms -----------------------------------------
    @property
    def params_(self) -> Params:
        """[(W^k, b^k)], W^k (n_k, n_{k-1}): the package's layout, views of ``coefs_``.

        ``lbp.compile(est.spec_).forward(est.params_, X)`` is what ``predict`` computes from.
        """
        check_is_fitted(self, "coefs_")
        return [(c.T, b) for c, b in zip(self.coefs_, self.intercepts_)]

    @property
    def derivation_(self) -> Derivation | None:
        """``lbp.derive(spec_)``: the exact KKT derivation of the fitted network, or ``None``.

        ``None`` when the network has more than ``lbp.MAX_EXACT_WEIGHTS`` weights: the exact
        derivation makes one SymPy symbol per weight (about 2 ms each), so it is refused there.
        Such networks are covered by the general proof, ``lbp.verify_general()`` (any depth and
        width), and their compiled kernels by ``lbp.verify(lbp.compile(est.spec_))``.
        Computed on first access (seconds for a digits-sized network), never during ``fit``,
        and shared by every estimator with the same network.
        """
        check_is_fitted(self, "spec_")
        if self.spec_.n_weights > MAX_EXACT_WEIGHTS:
            return None
        return _derivation(self.spec_)

    # --- checks -----------------------------------------------------------------------------
    def _config(self, random_state: Any) -> _Config:
        """Check every hyperparameter with a message naming it; scikit-learn checks at fit."""
        hidden: Any = self.hidden_layer_sizes
        sizes: Any = [hidden] if _is_int(hidden) else hidden
        if (
            isinstance(sizes, (str, bytes))
            or not isinstance(sizes, (Sequence, np.ndarray))
            or not all(_is_int(n) and int(n) >= 1 for n in sizes)
        ):
            raise ValueError(
                f"hidden_layer_sizes must be a positive integer or a sequence of positive "
                f"integers such as (100,) or (64, 32), got {hidden!r}"
            )
        activation = self.activation
        if not isinstance(activation, str):
            raise TypeError(f"activation must be a string, got {type(activation).__name__}")
        if self.solver not in SOLVERS:
            extra = (
                "; 'lbfgs' (full-batch quasi-Newton) is not supported: lagrange_bp derives the "
                "gradient and trains with mini-batch optimizers"
                if self.solver == "lbfgs"
                else ""
            )
            raise ValueError(
                f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}{extra}"
            )
        if not _is_real(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a non-negative number, got {self.alpha!r}")
        batch: Any = self.batch_size
        if not (batch == "auto" or (_is_int(batch) and batch >= 1)):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {batch!r}")
        if not _is_real(self.learning_rate_init) or self.learning_rate_init <= 0:
            raise ValueError(
                f"learning_rate_init must be a positive number, got {self.learning_rate_init!r}"
            )
        if not _is_int(self.max_iter) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not _is_bool(getattr(self, name)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (_is_bool(self.verbose) or _is_int(self.verbose)):
            raise ValueError(f"verbose must be a boolean or an integer, got {self.verbose!r}")
        if not _is_real(self.tol) or self.tol < 0:
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be a number in [0, 1), got {self.momentum!r}")
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if not _is_real(self.epsilon) or self.epsilon <= 0:
            raise ValueError(f"epsilon must be a positive number, got {self.epsilon!r}")
        if not _is_real(self.validation_fraction) or not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be a number in (0, 1), got {self.validation_fraction!r}"
            )
        patience = self.n_iter_no_change
        if not ((_is_int(patience) and patience >= 1) or patience == np.inf):
            raise ValueError(
                f"n_iter_no_change must be a positive integer or numpy.inf, got {patience!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.solver in ("momentum", "nesterov") and self.momentum == 0:
            raise ValueError(f"solver={self.solver!r} needs momentum in (0, 1), got 0")
        optimizer = self.solver
        if optimizer == "sgd" and self.momentum > 0:
            optimizer = "nesterov" if self.nesterovs_momentum else "momentum"
        return _Config(
            hidden=tuple(int(n) for n in sizes),
            activation=SKLEARN_ACTIVATIONS.get(activation, activation),
            optimizer=optimizer,
            momentum=float(self.momentum),
            betas=(float(self.beta_1), float(self.beta_2)),
            eps=float(self.epsilon),
            lr=float(self.learning_rate_init),
            dtype=str(self.dtype),
            max_iter=int(self.max_iter),
            n_iter_no_change=float(patience),
            tol=float(self.tol),
            seed=_seed(random_state),
        )

    def _spec(self, config: _Config, n_features: int, n_outputs: int, decay: float) -> NetworkSpec:
        widths = (n_features, *config.hidden, n_outputs)
        hidden = (config.activation,) * len(config.hidden)
        try:
            return NetworkSpec(widths, (*hidden, self._output_activation), self._loss, decay)
        except ValueError as exc:
            names = ", ".join(["logistic", *ACTIVATIONS])
            raise ValueError(
                f"activation={self.activation!r}: {exc} (scikit-learn's names and the "
                f"package's are accepted: {names}, or an expression in z)"
            ) from None

    # --- subclass hooks ---------------------------------------------------------------------
    def _targets(self, X: Any, y: Any, *, first: bool, incremental: bool) -> _Targets:
        """(X, Y, classes): checked inputs, the target matrix (n_samples, n_outputs) and, for a
        classifier, the classes (set as ``classes_`` only once training succeeded)."""
        raise NotImplementedError

    def _val_score(self, out: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    # --- training ---------------------------------------------------------------------------
    def _fit(self, X: Any, y: Any, *, incremental: bool) -> Self:
        config = self._config(self.random_state)
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        fitted = hasattr(self, "coefs_")
        first = not fitted or (not incremental and not self.warm_start)
        X, Y, classes = self._targets(X, y, first=first, incremental=incremental)
        X = np.ascontiguousarray(X, dtype=config.dtype)
        Y = np.ascontiguousarray(Y, dtype=config.dtype)

        if self.early_stopping:
            X, X_val, Y, Y_val = train_test_split(
                X,
                Y,
                test_size=self.validation_fraction,
                random_state=config.seed,
                stratify=Y.argmax(axis=1) if is_classifier(self) else None,
            )
            if len(X_val) < 2:
                raise ValueError(
                    "The validation set is too small (fewer than 2 samples): increase "
                    "validation_fraction or the size of the data set"
                )
        n = len(X)
        batch = min(200 if self.batch_size == "auto" else int(self.batch_size), n)
        if self.batch_size != "auto" and int(self.batch_size) > n:
            warnings.warn(
                f"batch_size={self.batch_size} is larger than the {n} training samples; "
                f"it is clipped to {n}",
                UserWarning,
                stacklevel=3,
            )
        # scikit-learn's batch objective is mean ℓ + alpha/(2 n_batch) Σ‖W‖²: the derived
        # objective's α is alpha / batch, fixed at the first fit (warm starts keep it)
        spec = self._spec(config, X.shape[1], Y.shape[1], self.alpha / batch)
        if not first:
            if self.alpha != self._alpha:
                raise ValueError(
                    f"alpha is {self.alpha!r} but the fitted network was trained with "
                    f"alpha={self._alpha!r} (its objective's weight decay); refit with "
                    f"warm_start=False"
                )
            spec = dataclasses.replace(spec, weight_decay=self.spec_.weight_decay)
            if spec != self.spec_:
                how = "partial_fit" if incremental else "warm_start=True"
                raise ValueError(
                    f"{how} continues the fitted network {self.spec_.describe()}, but the "
                    f"parameters and data now give {spec.describe()}; refit with warm_start=False"
                )
        model = _compiled(spec, config.dtype)
        check_memory(spec, batch, model.dtype.itemsize)

        if first:
            params = model.init_params(config.seed)
            loss_curve: list[float] = []
            t = 0
            best_loss = np.inf
            no_improvement = 0
        else:
            params = [
                (np.array(c.T, dtype=model.dtype, order="C"), np.array(b, dtype=model.dtype))
                for c, b in zip(self.coefs_, self.intercepts_)
            ]
            loss_curve = list(self.loss_curve_)
            t = self.t_
            best_loss = self.best_loss_ if self.best_loss_ is not None else np.inf
            no_improvement = self._no_improvement_count
        old: Optimizer | None = getattr(self, "_optimizer", None)
        if incremental and not first and old is not None and old.name == config.optimizer:
            # partial_fit goes on where the last call stopped; on copies, so that a call that
            # fails (TrainingDiverged) leaves the estimator as it was
            opt = Optimizer.from_state(old.state())
            opt.lr, opt.momentum, opt.betas, opt.eps = (
                config.lr,
                config.momentum,
                config.betas,
                config.eps,
            )
            rng = np.random.default_rng()
            rng.bit_generator.state = self._rng.bit_generator.state
        else:
            opt = Optimizer(config.optimizer, config.lr, config.momentum, config.betas, config.eps)
            rng = np.random.default_rng(config.seed)

        validation_scores: list[float] | None = None
        best_score = -np.inf
        best_params: Params | None = None
        if self.early_stopping:
            validation_scores = []
            best_params = [(W.copy(), b.copy()) for W, b in params]

        epochs = _Epochs(model, params, opt, X, Y, batch)
        params = epochs.params  # views of the flat array the steps update
        n_iter = 0
        for _ in range(1 if incremental else config.max_iter):
            order = rng.permutation(n) if self.shuffle else None
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                total = epochs.run(order, len(loss_curve) + 1, config.lr)
            n_iter += 1
            t += n
            loss_curve.append(total)
            if self.verbose:
                print(f"Iteration {len(loss_curve)}, loss = {loss_curve[-1]:.8f}")
            # scikit-learn's rule: count the epochs that did not improve by more than tol
            if validation_scores is not None:
                score = self._val_score(self._forward(model, params, X_val), Y_val)
                validation_scores.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                no_improvement = no_improvement + 1 if score < best_score + config.tol else 0
                if score > best_score:
                    best_score = score
                    best_params = [(W.copy(), b.copy()) for W, b in params]
            else:
                no_improvement = (
                    no_improvement + 1 if loss_curve[-1] > best_loss - config.tol else 0
                )
                best_loss = min(best_loss, loss_curve[-1])
            if no_improvement > config.n_iter_no_change:
                if self.verbose:
                    what = "Validation score" if validation_scores is not None else "Training loss"
                    print(
                        f"{what} did not improve more than tol={config.tol:f} for "
                        f"{self.n_iter_no_change} consecutive epochs. Stopping."
                    )
                break
            if incremental:
                break
            if n_iter == config.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({config.max_iter}) reached and "
                    f"the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        if best_params is not None:
            params = best_params  # early stopping keeps the best validation score's parameters

        # every fitted attribute is set here, after training succeeded
        if classes is not None:
            self.classes_ = classes
        self.spec_ = spec
        self._alpha = self.alpha
        self.coefs_ = [W.T for W, _ in params]  # (n_in, n_out) views of C-contiguous W^k
        self.intercepts_ = [b for _, b in params]
        self.n_outputs_ = spec.widths[-1]
        self.n_layers_ = len(spec.widths)
        self.out_activation_ = self._output_activation
        self.n_iter_ = n_iter
        self.t_ = t
        self.loss_curve_ = loss_curve
        self.loss_ = loss_curve[-1]
        self.best_loss_ = None if validation_scores is not None else float(best_loss)
        self.validation_scores_ = validation_scores
        self.best_validation_score_ = float(best_score) if validation_scores is not None else None
        self._no_improvement_count = no_improvement
        self._optimizer = opt
        self._rng = rng
        return self

    # --- prediction -------------------------------------------------------------------------
    @staticmethod
    def _forward(model: Model, params: Params, X: np.ndarray) -> np.ndarray:
        """x^N for the rows of X with the generated forward kernel, in bounded chunks."""
        fn = model.kernels["forward"].fn
        out = np.empty((len(X), model.spec.widths[-1]), model.dtype)
        for start in range(0, len(X), PREDICT_CHUNK):
            chunk = X[start : start + PREDICT_CHUNK]
            out[start : start + len(chunk)] = fn(
                params, chunk, _buffers(model, "forward", len(chunk))
            )
        return out

    def _output(self, X: Any) -> np.ndarray:
        """The network's output x^N for X (checked against the fitted input width)."""
        check_is_fitted(self, "coefs_")
        X = _validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        model = _compiled(self.spec_, str(self.coefs_[0].dtype))
        params = model.check_params(self.params_)  # no copy unless coefs_ were replaced
        return self._forward(model, params, np.ascontiguousarray(X, dtype=model.dtype))


class _Epochs:
    """The training loop's state: the parameters as views of one flat array (a copy of the
    given ones) that the optimizer steps on at once, the kernel with buffers of this loop's
    own (the last, smaller batch in the first rows of the full batch's), and the batches
    (``train.Batches``: shuffled rows gathered into buffers), so that an epoch allocates
    nothing."""

    def __init__(
        self, model: Model, params: Params, opt: Optimizer, X: np.ndarray, Y: np.ndarray, batch: int
    ) -> None:
        self.theta, self.params = pack_params(params, model.dtype)
        self.shapes = [a.shape for pair in self.params for a in pair]
        self.opt, self.X, self.Y, self.batch = opt, X, Y, batch
        last = len(X) % batch
        self.grad: np.ndarray | None = None
        if opt.name == "sgd":  # the fused step, as lbp.train takes it
            self.fn = model.kernels["sgd_step"].fn
            self.buffers = model.new_buffers("sgd_step", batch, last)
        else:  # the gradient into one flat array, for Optimizer.step_flat
            self.fn = model.kernels["loss_and_grad"].fn
            self.grad, self.buffers = model.gradient_buffers(batch, last)
        self.batches = Batches(X, Y, batch)

    def run(self, order: np.ndarray | None, epoch: int, lr: float) -> float:
        """One pass over the rows (in ``order``, or as they are); the mean of the batch losses."""
        n, batch, opt, params = len(self.X), self.batch, self.opt, self.params
        fn, buffers, theta, grad, shapes = self.fn, self.buffers, self.theta, self.grad, self.shapes
        total = 0.0
        for i, (xb, yb) in enumerate(self.batches(order)):
            rows = len(xb)
            if grad is None:
                loss = float(fn(params, xb, yb, opt.lr, buffers[rows]))
                opt.steps += 1
            else:
                loss = float(fn(params, xb, yb, buffers[rows])[0])
                opt.step_flat(theta, grad, shapes)
            if not math.isfinite(loss):
                _diverged(epoch, i + 1, lr)
            total += loss * rows
        if not _finite(theta):
            _diverged(epoch, -(-n // batch), lr)
        return total / n


def _seed(random_state: Any) -> int:
    """``random_state`` (None, an int or a RandomState) as the package's integer seed: an int
    is used as it is, so ``random_state=s`` trains as ``lbp.train(..., seed=s)`` does."""
    if _is_int(random_state) and 0 <= int(random_state) < 2**32:
        return int(random_state)
    try:
        rs = check_random_state(random_state)
    except ValueError:
        raise ValueError(
            f"random_state must be None, an integer in [0, 2**32) or a numpy RandomState, "
            f"got {random_state!r}"
        ) from None
    return int(rs.randint(np.iinfo(np.int32).max))


def _diverged(epoch: int, batch: int, lr: float) -> None:
    raise TrainingDiverged(
        f"training diverged at epoch {epoch}, batch {batch}: the loss or the parameters became "
        f"NaN or infinite with learning_rate_init={lr:g}; try a smaller one (e.g. {lr / 10:g}) "
        f"or scale the inputs (StandardScaler)"
    )


class LagrangeMLPClassifier(ClassifierMixin, _LagrangeMLP):
    """A multilayer perceptron classifier trained with the derived, proven backpropagation.

    scikit-learn's ``MLPClassifier`` interface (parameters, ``fit``, ``partial_fit``,
    ``predict``, ``predict_proba``, ``score``, ``coefs_``, ``loss_curve_``, ...; the mapping and
    the deviations are in the module's docstring). The output layer is softmax with the
    cross-entropy loss, for two classes as well (``MLPClassifier`` uses one logistic unit
    there): the package derives cross-entropy for a softmax output, so a binary problem has
    two output units and ``n_outputs_ == 2``. Multilabel targets are not supported.

    Fitted attributes beyond scikit-learn's: ``spec_`` (the ``NetworkSpec``), ``params_`` (the
    package's parameter layout) and ``derivation_`` (the exact derivation, or ``None`` above
    ``lbp.MAX_EXACT_WEIGHTS`` weights).
    """

    _output_activation = "softmax"
    _loss = "cross_entropy"
    classes_: np.ndarray

    def fit(self, X: Any, y: Any) -> Self:
        """Train from the start (or from the fitted weights with ``warm_start=True``)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> Self:
        """One epoch over (X, y), continuing the optimizer's state and the shuffling.

        ``classes`` (every label that will ever occur) is required on the first call, since
        the width of the output layer is fixed then, as with scikit-learn.
        """
        _check_partial_fit_first_call(self, classes)  # sets classes_ on the first call
        return self._fit(X, y, incremental=True)

    def _targets(self, X: Any, y: Any, *, first: bool, incremental: bool) -> _Targets:
        X, y = _validate_data(
            self, X, y, multi_output=True, dtype=(np.float64, np.float32), reset=first
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(
                f"{type(self).__name__} supports binary and multiclass targets (one label per "
                f"sample), got {kind!r} targets: the package's cross-entropy needs a softmax "
                f"output, one class per sample; multilabel classification is not supported"
            )
        labels = np.unique(y)
        classes = labels if first and not incremental else self.classes_
        if len(classes) < 2:
            raise ValueError(
                f"the classifier needs at least 2 classes, got 1 class ({classes[0]!r})"
            )
        if incremental:  # classes_ were set by the first call to partial_fit
            unknown = np.setdiff1d(labels, classes)
            if len(unknown):
                raise ValueError(
                    f"y has classes not in classes_ {classes.tolist()}: {unknown.tolist()} "
                    f"(pass every class in classes= on the first call to partial_fit)"
                )
        elif not first and set(labels.tolist()) != set(classes.tolist()):
            raise ValueError(
                f"warm_start can only be used where y has the same classes as in the previous "
                f"call to fit: previously {classes.tolist()}, y has {labels.tolist()}"
            )
        Y = np.zeros((len(y), len(classes)))
        Y[np.arange(len(y)), np.searchsorted(classes, y)] = 1.0
        return X, Y, classes

    def _val_score(self, out: np.ndarray, y: np.ndarray) -> float:
        return float(accuracy_score(y.argmax(axis=1), out.argmax(axis=1)))

    def predict(self, X: Any) -> np.ndarray:
        """The class of largest probability for every row of X."""
        out = self._output(X)  # first: it raises NotFittedError before fit
        return self.classes_[out.argmax(axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (the softmax output), columns in the order of ``classes_``."""
        return self._output(X)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """log of ``predict_proba`` (−inf where a probability underflows to 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class LagrangeMLPRegressor(RegressorMixin, _LagrangeMLP):
    """A multilayer perceptron regressor trained with the derived, proven backpropagation.

    scikit-learn's ``MLPRegressor`` interface (the mapping and the deviations are in the
    module's docstring): identity output and the package's mse loss, ℓ = ½‖x − y‖² summed over
    the outputs, J its batch mean. ``MLPRegressor`` reports that loss divided by the number of
    outputs (its gradient is the same); ``loss_curve_`` here is J, as derived. ``y`` may be 1-D
    or 2-D (several outputs); with one output, ``predict`` returns a 1-D array.
    """

    _output_activation = "identity"
    _loss = "mse"

    def fit(self, X: Any, y: Any) -> Self:
        """Train from the start (or from the fitted weights with ``warm_start=True``)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> Self:
        """One epoch over (X, y), continuing the optimizer's state and the shuffling."""
        return self._fit(X, y, incremental=True)

    def _targets(self, X: Any, y: Any, *, first: bool, incremental: bool) -> _Targets:
        X, y = _validate_data(
            self,
            X,
            y,
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=first,
        )
        return X, (y.reshape(-1, 1) if y.ndim == 1 else y), None

    def _val_score(self, out: np.ndarray, y: np.ndarray) -> float:
        return float(r2_score(y, out))

    def predict(self, X: Any) -> np.ndarray:
        """The network's output for every row of X: (n_samples,) or (n_samples, n_outputs)."""
        out = self._output(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self) -> dict[str, bool]:  # scikit-learn < 1.6
        return {"multioutput": True}
