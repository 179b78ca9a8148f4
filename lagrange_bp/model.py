"""Step 7: the compiled model — NumPy functions generated from the derived equations.

``compile(spec)`` prints the generic-layer equations of ``generic`` into NumPy kernels
(``kernels``) and wraps them with checks at the public boundary. Arrays: samples are rows,
X (B, n_0), Y (B, n_N), W^k (n_k, n_{k-1}), b^k (n_k,). float64 by default, float32 on request.
"""

from __future__ import annotations

import copy
import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from .functions import get_activation, get_loss
from .graph import GraphSpec
from .kernels import Kernel, build_kernels
from .spec import NetworkSpec, available_memory

if TYPE_CHECKING:
    from .graph_model import GraphModel

Params = list[tuple[np.ndarray, np.ndarray]]
DTYPES = ("float64", "float32")
MAX_BUFFER_SETS = 16  # idle buffers kept for this many keys (kernel, batch size, last batch)
MAX_IDLE = 4  # idle buffer sets kept per key: one per thread that used the model at once
BufferSets = dict[int, tuple[np.ndarray, ...]]  # a kernel's buffers by batch size (new_buffers)


class Compiled:
    """A model's generated kernels and their preallocated buffers (``Model``, ``GraphModel``):
    ``kernels`` by name, ``_shapes`` of every buffer (ints and "B"), ``dtype``.

    A kernel writes into its buffers, so a call needs a set of its own while it runs: it takes
    one from the model's idle sets (warm in cache from an earlier call) or makes a new one, and
    gives it back when done (``_take``, ``_give``); ``lbp.train`` keeps its gather buffers
    there too. Threads that share a model never share a set."""

    kernels: dict[str, Kernel]
    _shapes: dict[str, tuple[int | str, ...]]
    _idle: dict[tuple[Any, ...], list[Any]]
    _lock: threading.Lock
    _stepped: Any  # the params list the last checked sgd_step updated (``_same_params``)
    dtype: np.dtype

    # --- generated code --------------------------------------------------------------------
    def source(self, kernel: str = "sgd_step") -> str:
        """The generated Python source of a kernel: forward, adjoint, loss_and_grad, sgd_step,
        loss."""
        return self._kernel(kernel).source

    def equations(self) -> list[tuple[str, Any]]:
        """The SymPy matrix expressions (samples as rows) the kernels were printed from."""
        return list(self._kernel("sgd_step").equations)

    def _kernel(self, name: str) -> Kernel:
        if name not in self.kernels:
            raise ValueError(f"unknown kernel {name!r}; known: {', '.join(self.kernels)}")
        return self.kernels[name]

    def __deepcopy__(self, memo: dict[int, Any]) -> Compiled:
        """A copy with idle buffers and a lock of its own; the kernels, which nothing
        changes, are shared."""
        new = copy.copy(self)
        new._idle, new._lock, new._stepped = {}, threading.Lock(), None
        memo[id(self)] = new
        return new

    def _take(self, key: tuple[Any, ...]) -> Any:
        """Buffers an earlier call left idle under ``key`` (by ``_give``), now the caller's
        alone until it gives them back, or None: the caller makes new ones. ``list.pop`` is
        atomic, so two threads never take the same set. A kernel's key is (kernel, batch,
        last) and its buffers ``new_buffers(kernel, batch, last)``."""
        try:
            return self._idle[key].pop()
        except (KeyError, IndexError):  # none idle (or another thread took the last one)
            return None

    def _give(self, key: tuple[Any, ...], buffers: Any) -> None:
        """Keep ``buffers`` (taken or made under ``key``) for the next call; the oldest key
        goes beyond ``MAX_BUFFER_SETS`` keys, and a set beyond ``MAX_IDLE`` idle ones is
        dropped."""
        idle = self._idle.get(key)
        if idle is None:
            with self._lock:
                while key not in self._idle and len(self._idle) >= MAX_BUFFER_SETS:
                    self._idle.pop(next(iter(self._idle)))
                idle = self._idle.setdefault(key, [])
        if len(idle) < MAX_IDLE:
            idle.append(buffers)

    def _run(self, kernel: str, rows: int, result: Callable[[Any], Any], *args: Any) -> Any:
        """``kernel`` on ``args`` and buffers of this call's own; ``result`` reads its output
        (copies of buffer arrays, a float) before the buffers are given back."""
        key = (kernel, rows, 0)
        sets = self._take(key) or self.new_buffers(kernel, rows)
        try:
            return result(self.kernels[kernel].fn(*args, sets[rows]))
        finally:
            self._give(key, sets)

    def buffer_shapes(self, kernel: str, batch: int) -> list[tuple[int, ...]]:
        """The shapes of a kernel's preallocated buffers, in the order it unpacks them."""
        names = self._kernel(kernel).buffer_names
        return [tuple(batch if d == "B" else int(d) for d in self._shapes[n]) for n in names]

    def new_buffers(
        self,
        kernel: str,
        batch: int,
        last: int = 0,
        given: Mapping[str, np.ndarray] | None = None,
    ) -> dict[int, tuple[np.ndarray, ...]]:
        """Buffers of ``kernel`` of the caller's own (not the model's, so that loops sharing a
        model share no buffers), by batch size: for ``batch`` rows and, when ``last`` (the
        rows of a smaller last batch) is given, for ``last`` rows in the first rows of the
        same arrays, so that a training loop keeps one set of buffers in cache. ``given``
        names buffers to use as they are (for instance gradient views of one flat array)."""
        names, given = self._kernel(kernel).buffer_names, given or {}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"kernel {kernel} has no buffer {unknown[0]}")
        full = []
        for name, shape in zip(names, self.buffer_shapes(kernel, batch)):
            a = given.get(name)
            if a is not None and (a.shape != shape or a.dtype != self.dtype):
                raise ValueError(f"buffer {name} must be a {self.dtype} array of shape {shape}")
            full.append(empty_aligned(shape, self.dtype) if a is None else a)
        out = {batch: tuple(full)}
        if 0 < last < batch:
            shapes = self.buffer_shapes(kernel, last)
            out[last] = tuple(
                _first_rows(a, self._shapes[name], shape, last)
                for name, a, shape in zip(names, full, shapes)
            )
        return out


CACHE_LINE = 64  # bytes


def empty_aligned(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data start on a cache line (NumPy promises 16 bytes).
    A kernel's buffers are made so: on digits 64-128-10, B 32 (AVX-512 loops), an epoch on
    buffers that started mid-line ran up to 10% slower, by chance of where they fell."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _first_rows(
    a: np.ndarray, symbolic: tuple[int | str, ...], shape: tuple[int, ...], rows: int
) -> np.ndarray:
    """The buffer ``a`` for a batch of ``rows``: ``a`` itself when its shape has no batch
    axis, its first rows (contiguous) when the batch axis is the first, its first columns
    when it is the last (a sample's values by column, as the softmax's row maximum takes
    them), else a new array."""
    if "B" not in symbolic:
        return a
    if symbolic.count("B") == 1 and symbolic[0] == "B":
        return a[:rows]
    if symbolic.count("B") == 1 and symbolic[-1] == "B":
        return a[..., :rows]
    return empty_aligned(shape, a.dtype)


class Model(Compiled):
    """Forward, adjoint, loss-and-gradient and SGD step for one spec, generated by lagrange_bp."""

    def __init__(self, spec: NetworkSpec, dtype: str = "float64") -> None:
        if not isinstance(spec, NetworkSpec):
            raise TypeError(f"spec must be a lagrange_bp.NetworkSpec, got {type(spec).__name__}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.kernels, self._shapes = build_kernels(spec)
        self._idle, self._lock = {}, threading.Lock()
        self._stepped: tuple[Params, list[np.ndarray]] | None = None  # see _same_params
        self._classifies = get_loss(spec.loss).classification  # read by check_data

    def __repr__(self) -> str:
        return (
            f"<Model {self.spec.describe()}, {self.dtype}, {self.spec.n_params:,} parameters; "
            f"kernels {', '.join(self.kernels)}>"
        )

    # --- the public functions --------------------------------------------------------------
    def init_params(self, seed: int = 0) -> Params:
        """Glorot-uniform weights (He's limit √(6/n_in) where the activation record asks for
        it, the relu family) and zero biases, from ``seed``."""
        check_memory(self.spec, 1, self.dtype.itemsize)
        rng = np.random.default_rng(seed)
        params = []
        for (n_in, n_out), act in zip(
            zip(self.spec.widths[:-1], self.spec.widths[1:]), self.spec.activations
        ):
            he = get_activation(act).he_init
            limit = np.sqrt(6.0 / n_in) if he else np.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-limit, limit, size=(n_out, n_in)).astype(self.dtype)
            params.append((W, np.zeros(n_out, self.dtype)))
        return params

    def forward(self, params: Params, X: np.ndarray) -> np.ndarray:
        """x^N for every row of X: shape (B, n_N)."""
        p, X = self.check_params(params), self.check_inputs(X)
        return self._run("forward", len(X), np.copy, p, X)

    def loss_and_grad(self, params: Params, X: np.ndarray, Y: np.ndarray) -> tuple[float, Params]:
        """J = (1/B) Σ ℓ and ∂L/∂θ at the KKT point (= ∇J), shaped like params."""
        p, X, Y = self.check_params(params), *self.check_data(X, Y)
        return self._run("loss_and_grad", len(X), _copied_grads, p, X, Y)

    def loss(self, params: Params, X: np.ndarray, Y: np.ndarray) -> float:
        """J = (1/B) Σ ℓ(y_i, x^N_i) over the rows of X and Y (forward pass only)."""
        p, X, Y = self.check_params(params), *self.check_data(X, Y)
        return self._run("loss", len(X), float, p, X, Y)

    def adjoint(self, params: Params, X: np.ndarray, Y: np.ndarray) -> list[np.ndarray]:
        """λ^k for k = 1..N, each (B, n_k): the multipliers at the KKT point (= −∂J/∂x^k)."""
        p, X, Y = self.check_params(params), *self.check_data(X, Y)
        with np.errstate(divide="ignore", invalid="ignore"):  # λ^N = y/(B x^N) may be inf
            return self._run("adjoint", len(X), _copies, p, X, Y)

    def sgd_step(
        self, params: Params, X: np.ndarray, Y: np.ndarray, lr: float, *, check: bool = True
    ) -> float:
        """θ ← θ − lr ∂L/∂θ **in place** on ``params`` (``train`` passes its own copy); returns
        the batch's loss J at the parameters before the step (from the same forward pass).

        ``check=False`` skips the boundary checks, for a training loop that made them once.
        """
        if check:
            if not self._same_params(params):  # full checks once per params list
                checked = self.check_params(params)
                for k, (pair, own) in enumerate(zip(checked, params), start=1):
                    if any(a is not b for a, b in zip(pair, own)):
                        raise ValueError(
                            f"sgd_step updates params in place, so W^{k} and b^{k} must already "
                            f"be C-contiguous {self.dtype} NumPy arrays (the model's dtype); "
                            f"convert them first, or use lbp.train, which works on its own copy"
                        )
                self._stepped = (params, [a for pair in params for a in pair])
            X, Y = self.check_data(X, Y)
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
                raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        loss = self._run("sgd_step", len(X), float, params, X, Y, lr)
        if check and not math.isfinite(np.add.reduce(params[-1][1])):
            self._stepped = None
            raise ValueError(
                "sgd_step: the parameters became NaN or infinite (a learning rate too large?)"
            )
        return loss

    def gradient_buffers(
        self, batch: int, last: int = 0
    ) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, ...]]]:
        """``new_buffers`` of the ``loss_and_grad`` kernel with ∂L/∂W^k and ∂L/∂b^k written
        into views of one flat array, returned first: W^1, b^1, W^2, … end to end, the layout
        of ``optimizers.pack_params``, so that an optimizer steps on all of them at once."""
        names = [f"g{w}{k}" for k in range(1, self.spec.depth + 1) for w in "Wb"]
        if not set(names) <= set(self._kernel("loss_and_grad").buffer_names):
            raise RuntimeError(f"the loss_and_grad kernel does not return its gradient in {names}")
        shapes = [tuple(int(d) for d in self._shapes[name]) for name in names]
        flat = np.zeros(sum(math.prod(s) for s in shapes), self.dtype)
        views, start = {}, 0
        for name, shape in zip(names, shapes):
            views[name] = flat[start : start + math.prod(shape)].reshape(shape)
            start += math.prod(shape)
        return flat, self.new_buffers("loss_and_grad", batch, last, views)

    def stepper(
        self, batch: int, last: int = 0, buffers: BufferSets | None = None
    ) -> Callable[[Params, np.ndarray, np.ndarray, float], float]:
        """The fused ``sgd_step`` kernel, unchecked, for batches of ``batch`` rows (and a last
        batch of ``last``): for a training loop that checked its data and params already. Its
        buffers are bound once: ``buffers`` (``new_buffers("sgd_step", batch, last)``), by
        default a set of its own, so that loops sharing the model share no buffers."""
        fn = self.kernels["sgd_step"].fn
        sets = self.new_buffers("sgd_step", batch, last) if buffers is None else buffers
        return lambda params, X, Y, lr: float(fn(params, X, Y, lr, sets[len(X)]))

    def _same_params(self, params: Params) -> bool:
        """``params`` is the list (and the very arrays, of unchanged layout) the last checked
        ``sgd_step`` updated: its values are this model's own results since, so only its
        layout is checked again, which costs microseconds instead of a scan of every entry."""
        last = self._stepped
        if last is None or params is not last[0]:
            return False
        arrays = iter(last[1])
        for pair in params:
            for a in pair:
                if a is not next(arrays, None) or not (a.flags.c_contiguous and a.flags.writeable):
                    return False
        return next(arrays, None) is None  # no array left over: every pair still whole

    # --- checks at the boundary ------------------------------------------------------------
    def check_params(self, params: Params, finite: bool = True) -> Params:
        """params as a list of (W, b) of this model's dtype; ValueError names what is wrong.
        ``finite=False``: NaN and inf are not looked for (a caller that checks a copy)."""
        n = self.spec.depth
        if not isinstance(params, Sequence) or len(params) != n:
            got = len(params) if isinstance(params, Sequence) else type(params).__name__
            raise ValueError(f"params must be a list of {n} (W, b) pairs, one per layer, got {got}")
        out = []
        for k, pair in enumerate(params, start=1):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"params[{k - 1}] must be a pair (W^{k}, b^{k})")
            shapes = ((self.spec.widths[k], self.spec.widths[k - 1]), (self.spec.widths[k],))
            out.append(
                tuple(
                    self._array(a, f"W^{k}" if i == 0 else f"b^{k}", shapes[i], finite)
                    for i, a in enumerate(pair)
                )
            )
        return out  # type: ignore[return-value]

    def check_inputs(self, X: np.ndarray) -> np.ndarray:
        return self._array(X, "X", (None, self.spec.widths[0]))

    def check_data(
        self, X: np.ndarray, Y: np.ndarray, values: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) as C-contiguous arrays of the model's dtype with n_0 and n_N columns and the
        same rows; finite; a classifier's rows of Y summing to 1. ValueError names what is
        wrong. Batches that are already right pass in a few attribute reads and reductions
        (a checked ``sgd_step`` on a batch of 32 pays this on every call). ``values=False``:
        the layout only, for a caller that checks the values as it reads them (``train``)."""
        widths, dtype = self.spec.widths, self.dtype
        if (
            type(X) is np.ndarray
            and type(Y) is np.ndarray
            and X.dtype == dtype
            and Y.dtype == dtype
            and X.ndim == 2
            and Y.ndim == 2
            and X.flags.c_contiguous
            and Y.flags.c_contiguous
            and X.shape[1] == widths[0]
            and Y.shape[1] == widths[-1]
            and 0 < X.shape[0] == Y.shape[0]
        ):
            if not values:
                return X, Y
            if math.isfinite(np.add.reduce(X, axis=None)):
                if self._classifies:
                    if _rows_sum_to_one(Y):  # also finite: NaN or inf shows in the row sums
                        return X, Y
                elif math.isfinite(np.add.reduce(Y, axis=None)):
                    return X, Y
        return self._check_data(X, Y, values)  # the checks one by one, naming what is wrong

    def _check_data(
        self, X: np.ndarray, Y: np.ndarray, values: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        X = self._array(X, "X", (None, self.spec.widths[0]), finite=values)
        loss = get_loss(self.spec.loss)
        # a classifier's Y: finite rows summing to 1, both seen in the row sums
        finite = values and not loss.classification
        Y = self._array(Y, "Y", (None, self.spec.widths[-1]), finite=finite)
        if len(X) != len(Y):
            raise ValueError(
                f"X and Y must have the same number of rows (samples), got {len(X)} and {len(Y)}"
            )
        if values and loss.classification and not _rows_sum_to_one(Y):
            if not _finite(Y):
                raise ValueError("Y contains NaN or inf")
            raise ValueError(
                f"Y: each row must sum to 1 for {loss.text} (one-hot or probabilities), "
                "since the simplified output term G^N = (Y − X^N)/B assumes it"
            )
        return X, Y

    def _array(
        self, a: object, name: str, shape: tuple[int | None, ...], finite: bool = True
    ) -> np.ndarray:
        """``a`` as a C-contiguous array of the model's dtype and ``shape`` (None: any number
        of rows, at least one); NaN or inf refused unless ``finite=False`` (checked later)."""
        if (  # the common case, checked in a few attribute reads
            type(a) is np.ndarray
            and a.dtype == self.dtype
            and a.ndim == len(shape)
            and a.flags.c_contiguous
            and all(d is None or d == s for d, s in zip(shape, a.shape))
            and a.shape[0] > 0
        ):
            if finite and not _finite(a):
                raise ValueError(f"{name} contains NaN or inf")
            return a
        expected = "(" + ", ".join("B" if d is None else str(d) for d in shape) + ")"
        try:
            arr = np.asarray(a)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric array of shape {expected}: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(
                f"{name} must be a numeric array of shape {expected}, got dtype {arr.dtype}"
            )
        if arr.ndim != len(shape) or any(
            d is not None and d != s for d, s in zip(shape, arr.shape)
        ):
            raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")
        if shape[0] is None and arr.shape[0] == 0:
            raise ValueError(f"{name} must have at least one row, got shape {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if finite and not _finite(arr):
            raise ValueError(f"{name} contains NaN or inf")
        return arr


def _copies(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [a.copy() for a in arrays]


def _copied_grads(out: tuple[Any, Params]) -> tuple[float, Params]:
    """A loss_and_grad kernel's (J, [(∂W, ∂b)]) as a float and copies of the buffers."""
    return float(out[0]), [(gW.copy(), gb.copy()) for gW, gb in out[1]]


def _finite(a: np.ndarray) -> bool:
    """No NaN or inf in a: its sum is finite (one pass, no temporary), or, when the sum
    overflowed, every entry is."""
    return math.isfinite(np.add.reduce(a, axis=None)) or bool(np.isfinite(a).all())


@functools.cache
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of n ones (the row sums' right factor), made once."""
    ones = np.ones(n, dtype)
    ones.flags.writeable = False
    return ones


def _rows_sum_to_one(Y: np.ndarray) -> bool:
    """Every row of Y sums to 1 within 1e-6 (False if Y holds NaN or inf, which shows in the
    sums). The row sums as one BLAS product: NumPy's sum along rows loops row by row."""
    rows = Y @ _ones(Y.shape[1], Y.dtype)
    return bool(1.0 - 1e-6 <= np.minimum.reduce(rows) and np.maximum.reduce(rows) <= 1.0 + 1e-6)


def check_memory(spec: NetworkSpec, batch: int, itemsize: int = 8) -> None:
    """Refuse, with the numbers, a network whose parameters, gradients and per-batch buffers
    cannot fit in this machine's memory (they would fail midway with MemoryError)."""
    params = spec.n_params * itemsize * 4  # parameters, a copy, gradients, a temporary
    buffers = batch * sum(spec.widths) * itemsize * 8  # x, z, λ, G and temporaries per layer
    need, have = params + buffers, available_memory()
    if need > have // 2:
        raise ValueError(
            f"network {'-'.join(map(str, spec.widths))} needs about {need / 2**30:,.1f} GiB for "
            f"its parameters and buffers ({spec.n_params:,} parameters); this machine has "
            f"{have / 2**30:,.1f} GiB of memory"
        )


@overload
def compile(spec: NetworkSpec, dtype: str = "float64") -> Model: ...
@overload
def compile(spec: GraphSpec, dtype: str = "float64") -> GraphModel: ...
def compile(spec: NetworkSpec | GraphSpec, dtype: str = "float64") -> Model | GraphModel:
    """Generate the model's NumPy kernels from the derived generic-layer equations (a
    ``GraphSpec``: from each node's derived equations, ``graph_model.GraphModel``)."""
    if isinstance(spec, GraphSpec):
        from .graph_model import GraphModel

        return GraphModel(spec, dtype)
    return Model(spec, dtype)
