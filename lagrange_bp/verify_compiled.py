"""Step 7b: the proof reaches the code that runs — ``verify(model)`` (CONVENTIONS §3).

Every generated kernel (forward, adjoint, loss_and_grad, sgd_step, loss) is executed *from its
source, exactly as ``model.source()`` shows it*, over GF(p) (``exact_numpy``), at the model's
widths and a batch of B = 2 random samples, and every output is compared with an independent
exact reference: the composed loss J(θ) = (1/B) Σ ℓ(y, x^N(θ)) (+ (α/2) Σ_k ‖W^k‖² with weight
decay, α the exact rational of its decimal form) evaluated with forward-mode dual
numbers (``field``), from the activation and loss records' definitions (their stable forms,
which the kernels print), never from the derived equations or the printed code.

  forward   every entry of X^N against the reference's forward pass;
  loss      J;
  adjoint   each λ^k: Σ λ^k ⊙ U = −dJ/dt for x^k + t U, U random (λ^k = −∂J/∂x^k);
  gradient  each ∂L/∂W^k, ∂L/∂b^k: Σ g ⊙ V = dJ/dt for θ + t V, V random;
  sgd_step  J before the step, and each W^k, b^k after one step with a random η:
            Σ (θ' − θ) ⊙ V = −η dJ/dt.
A wrong entry anywhere changes the random linear form with probability 1 − 1/p; the
Schwartz–Zippel bound of the whole check is printed. Functions are random oracles, as in the
other proofs: σ' enters the kernels through the record's σ' = p(σ) identity and the reference
through SymPy's derivative rules, so they agree only if that identity holds. Two rewrites the
oracle model cannot express are taken as given and named in the report: the shift of a
softmax by its row maximum (run as 0), and a loss's log of the output written stably (log
softmax as z − log Σ e^z, both sides evaluate that form).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from .exact_numpy import ExactScalar, FieldArray, namespace, random_array, summed
from .field import CONST, FRESH, Deg, Degenerate, Evaluator, Oracle, P, Value, number, retry
from .functions import X_VAR, Y_VAR, Z_VAR, Activation, get_activation, get_loss
from .graph import GraphSpec
from .matrices import ARG_U, ARG_V, ARG_W, BATCH, Entrywise, LogSoftmax
from .model import Model, available_memory
from .spec import NetworkSpec
from .verify import Progress, Report, timed_step

if TYPE_CHECKING:
    from .graph_model import GraphModel

BATCH_SIZE = 2
#: Memory of the exact check per parameter: measured 210 bytes (784-1024-1024-10, 1.9 M
#: parameters: 480 MB peak against 90 MB for 2-3-1), doubled for headroom.
EXACT_BYTES_PER_PARAM = 420
KERNEL_ORDER = ("forward", "loss", "adjoint", "loss_and_grad", "sgd_step")


class Mismatch(AssertionError):
    """A kernel output that differs from the reference: the first one found."""


def mod_p(a: Any) -> np.ndarray:
    return np.mod(np.asarray(a, dtype=object), P).astype(object)


def matmul_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return mod_p(np.dot(a, b))


def dot_p(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.sum(a * b)) % P


class Reference:
    """The network's composed loss in GF(p), from the records: values, local derivatives, and
    directional derivatives of J along one direction at a time."""

    def __init__(self, model: Model, oracle: Oracle) -> None:
        spec = model.spec
        self.spec, self.oracle = spec, oracle
        self.acts = [get_activation(a) for a in spec.activations]
        self.loss = get_loss(spec.loss)
        self.alpha = number(sp.Rational(spec.decay.numerator, spec.decay.denominator))
        self.max_deg = 0

    # --- the forward pass, with each layer's local derivative --------------------------
    def run(
        self, params: list[tuple[FieldArray, FieldArray]], X: FieldArray, Y: FieldArray
    ) -> None:
        """Values x^k, z^k, local Jacobians of σ_k, and the loss with ∂f/∂x, from scratch."""
        self.params = [(W.a, b.a) for W, b in params]
        self.pdeg = [(W.deg, b.deg) for W, b in params]
        self.X, self.Y = X.a, Y.a
        self.x: dict[int, np.ndarray] = {0: X.a}
        self.xdeg: dict[int, Deg] = {0: X.deg}
        self.z: dict[int, np.ndarray] = {}
        self.local: dict[int, Any] = {}
        for k, act in enumerate(self.acts, start=1):
            W, b = self.params[k - 1]
            zdeg = summed(self.xdeg[k - 1] * self.pdeg[k - 1][0], W.shape[1]) + self.pdeg[k - 1][1]
            self.z[k] = mod_p(matmul_p(self.x[k - 1], W.T) + b)
            self.x[k], self.local[k], self.xdeg[k] = self._activate(act, self.z[k], zdeg)
        self._loss()

    def _evaluate(self, expr: sp.Expr, env: dict[sp.Symbol, Value], dims: int = 0) -> Value:
        ev = Evaluator(env, self.oracle, dims)
        out = ev(expr)
        self.max_deg = max(self.max_deg, ev.max_deg)
        return out

    def _activate(self, act: Activation, z: np.ndarray, zdeg: Deg) -> tuple[np.ndarray, Any, Deg]:
        """x = σ(z) and σ's Jacobian by rows: elementwise σ'(z), or each row's matrix."""
        x = np.empty_like(z)
        if act.elementwise:
            form = act.forward_form  # type: ignore[attr-defined]
            d = np.empty_like(z)
            for index in np.ndindex(z.shape):
                value = self._evaluate(form, {Z_VAR: Value(int(z[index]), zdeg, [1], CONST)}, 1)
                x[index], d[index] = value.v, (value.t or [0])[0]
            return x, d, FRESH
        n = z.shape[1]
        zs = sp.symbols(f"z1:{n + 1}", real=True)
        total = sp.Add(*[sp.exp(zj) for zj in zs])
        entries = [sp.exp(zi) / total for zi in zs]  # softmax, written out
        jac = np.empty((z.shape[0], n, n), dtype=object)
        for row in range(z.shape[0]):
            env = {
                zs[j]: Value(int(z[row, j]), zdeg, [int(i == j) for i in range(n)], CONST)
                for j in range(n)
            }
            ev = Evaluator(env, self.oracle, n)
            for i, e in enumerate(entries):
                value = ev(e)
                x[row, i] = value.v
                jac[row, i, :] = value.t or [0] * n
            self.max_deg = max(self.max_deg, ev.max_deg)
        return x, jac, FRESH

    def _loss(self) -> None:
        """J's value as the kernels print it, and ∂f/∂x at every output entry."""
        n = self.spec.depth
        x, y, z = self.x[n], self.Y, self.z[n]
        self.dfdx = self.loss_derivative(x, y)
        self.J = self.loss_terms(self.acts[-1], x, z, y) * pow(x.shape[0], P - 2, P) % P
        half = self.alpha * pow(2, P - 2, P)  # + (α/2) Σ_k ‖W^k‖², the weight decay
        self.J = (self.J + half * sum(dot_p(W, W) for W, _ in self.params)) % P

    def loss_derivative(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∂f/∂x of the loss's per-entry term f(x, y) at every entry of the output x."""
        d = np.empty_like(x)
        for index in np.ndindex(x.shape):
            env = {
                X_VAR: Value(int(x[index]), FRESH, [1], CONST),
                Y_VAR: Value(int(y[index]), FRESH),
            }
            d[index] = (self._evaluate(self.loss.term_form, env, 1).t or [0])[0]
        return d

    def loss_terms(self, act: Activation, x: np.ndarray, z: np.ndarray, y: np.ndarray) -> int:
        """Σ over entries of the loss terms the kernels print for activation ``act`` (not yet
        divided by B): from the output x, its pre-activation z (log softmax) and y."""
        shape = (BATCH, sp.Symbol("n"))
        Zm, Xm, Ym = (sp.MatrixSymbol(s, *shape) for s in ("Z", "X", "Y"))
        terms = self.loss.kernel_terms(act, Zm, Xm, Ym, 1)
        assert isinstance(terms, Entrywise)
        w = None
        if len(terms.matrices) == 3:
            w = z if not isinstance(terms.matrices[2], LogSoftmax) else self._log_softmax(z)
        total = 0
        for index in np.ndindex(x.shape):
            env = {ARG_U: Value(int(x[index]), FRESH), ARG_V: Value(int(y[index]), FRESH)}
            if w is not None:
                env[ARG_W] = Value(int(w[index]), FRESH)
            total += self._evaluate(terms.function.expr, env).v
        return total

    def _log_softmax(self, z: np.ndarray) -> np.ndarray:
        out = np.empty_like(z)
        zs = sp.symbols(f"z1:{z.shape[1] + 1}", real=True)
        log_total = sp.log(sp.Add(*[sp.exp(zj) for zj in zs]))
        for row in range(z.shape[0]):
            env = {zs[j]: Value(int(z[row, j]), FRESH) for j in range(z.shape[1])}
            ev = Evaluator(env, self.oracle)
            for j, zj in enumerate(zs):
                out[row, j] = ev(zj - log_total).v
        return out

    # --- directional derivatives ---------------------------------------------------------
    def _through(self, k: int, tx: np.ndarray) -> np.ndarray:
        """Push a tangent of x^k through layers k+1..N: the tangent of x^N."""
        for j in range(k + 1, self.spec.depth + 1):
            tz = matmul_p(tx, self.params[j - 1][0].T)
            tx = self._local(j, tz)
        return tx

    def _local(self, k: int, tz: np.ndarray) -> np.ndarray:
        local = self.local[k]
        if local.ndim == 2:
            return mod_p(local * tz)
        return mod_p(np.einsum("bij,bj->bi", local, tz))

    def _dJ(self, txN: np.ndarray) -> int:
        """dJ/dt = (1/B) Σ ∂f/∂x ⊙ t(x^N)."""
        return dot_p(self.dfdx, txN) * pow(txN.shape[0], P - 2, P) % P

    def along_state(self, k: int, U: np.ndarray) -> int:
        """dJ/dt for x^k + t U (x^k an input to layers k+1..N)."""
        return self._dJ(self._through(k, U))

    def along_param(self, k: int, which: int, V: np.ndarray) -> int:
        """dJ/dt for W^k + t V (which = 0; with the weight decay's α ⟨W^k, V⟩) or b^k + t V
        (which = 1)."""
        tz = (
            matmul_p(self.x[k - 1], V.T)
            if which == 0
            else mod_p(np.broadcast_to(V, self.z[k].shape))
        )
        decay = self.alpha * dot_p(self.params[k - 1][0], V) if which == 0 else 0
        return (self._dJ(self._through(k, self._local(k, tz))) + decay) % P


def _random(rng: random.Random, shape: tuple[int, ...]) -> np.ndarray:
    return random_array(rng, shape).a


def _fresh_buffers(model: Model, kernel: str, rng: random.Random) -> tuple[FieldArray, ...]:
    """Random contents: a kernel that reads a buffer before writing it reads garbage."""
    shapes = model.buffer_shapes(kernel, BATCH_SIZE)
    return tuple(random_array(rng, shape) for shape in shapes)


def _run(model: Model, kernel: str, oracle: Oracle, *args: Any) -> tuple[Any, int]:
    """Execute the kernel's source, exactly as model.source() shows it, in the exact namespace."""
    source = model.source(kernel)
    globals_, engine = namespace(oracle, model.kernels[kernel].constants)
    exec(compile(source, f"<lagrange_bp-exact-{kernel}>", "exec"), globals_)
    return globals_[kernel](*args), engine.calls


def _params(model: Model, rng: random.Random) -> list[tuple[FieldArray, FieldArray]]:
    w = model.spec.widths
    return [
        (random_array(rng, (w[k], w[k - 1])), random_array(rng, (w[k],)))
        for k in range(1, model.spec.depth + 1)
    ]


def _copy(params: list[tuple[FieldArray, FieldArray]]) -> list[tuple[FieldArray, FieldArray]]:
    return [(FieldArray(W.a.copy(), W.deg), FieldArray(b.a.copy(), b.deg)) for W, b in params]


@dataclass
class Trial:
    """One random point: parameters, data, η, oracle, and the reference at that point."""

    params: list[tuple[FieldArray, FieldArray]]
    X: FieldArray
    Y: FieldArray
    eta: ExactScalar
    oracle: Oracle
    ref: Reference
    rng: random.Random


def _trial(model: Model, rng: random.Random) -> Trial:
    spec = model.spec
    params = _params(model, rng)
    X = random_array(rng, (BATCH_SIZE, spec.widths[0]))
    Y = random_array(rng, (BATCH_SIZE, spec.widths[-1]))
    if get_loss(spec.loss).classification:  # rows of Y sum to 1, as the data check demands
        Y.a[:, -1] = (1 - np.sum(Y.a[:, :-1], axis=1)) % P
    oracle = Oracle(rng.randrange(2**64))
    ref = Reference(model, oracle)
    ref.run(params, X, Y)
    return Trial(params, X, Y, ExactScalar(rng.randrange(1, P), FRESH), oracle, ref, rng)


def _check_forward(model: Model, t: Trial) -> tuple[str, int]:
    out, calls = _run(
        model, "forward", t.oracle, t.params, t.X, _fresh_buffers(model, "forward", t.rng)
    )
    n = model.spec.depth
    bad = np.argwhere(out.a != t.ref.x[n])
    if len(bad):
        i = tuple(int(v) for v in bad[0])
        raise Mismatch(f"forward: X^{n}{list(i)} differs from the reference")
    return f"X^{n}: all {out.a.size} entries", calls


def _same_loss(kernel: str, value: object, t: Trial) -> None:
    if ExactScalar.of(value).v != t.ref.J:
        raise Mismatch(f"{kernel}: the loss J differs from the reference")


def _check_loss(model: Model, t: Trial) -> tuple[str, int]:
    value, calls = _run(
        model, "loss", t.oracle, t.params, t.X, t.Y, _fresh_buffers(model, "loss", t.rng)
    )
    _same_loss("loss", value, t)
    return "J", calls


def _check_adjoint(model: Model, t: Trial) -> tuple[str, int]:
    lams, calls = _run(
        model, "adjoint", t.oracle, t.params, t.X, t.Y, _fresh_buffers(model, "adjoint", t.rng)
    )
    for k, lam in enumerate(lams, start=1):
        U = _random(t.rng, lam.a.shape)
        if (-dot_p(lam.a, U)) % P != t.ref.along_state(k, U):
            raise Mismatch(f"adjoint: λ^{k} is not −∂J/∂x^{k} (random direction)")
    return f"λ^1..λ^{len(lams)}", calls


def _names(k: int) -> tuple[str, str]:
    return f"∂L/∂W^{k}", f"∂L/∂b^{k}"


def _check_gradients(model: Model, t: Trial) -> tuple[str, int]:
    (value, grads), calls = _run(
        model,
        "loss_and_grad",
        t.oracle,
        t.params,
        t.X,
        t.Y,
        _fresh_buffers(model, "loss_and_grad", t.rng),
    )
    _same_loss("loss_and_grad", value, t)
    for k, pair in enumerate(grads, start=1):
        for which, (g, name) in enumerate(zip(pair, _names(k))):
            V = _random(t.rng, g.a.shape)
            if dot_p(g.a, V) != t.ref.along_param(k, which, V):
                raise Mismatch(f"loss_and_grad: {name} is not ∂J/∂{name[4:]} (random direction)")
    return f"J, ∂L/∂W^k and ∂L/∂b^k for k = 1..{len(grads)}", calls


def _check_sgd(model: Model, t: Trial) -> tuple[str, int]:
    after = _copy(t.params)
    value, calls = _run(
        model,
        "sgd_step",
        t.oracle,
        after,
        t.X,
        t.Y,
        t.eta,
        _fresh_buffers(model, "sgd_step", t.rng),
    )
    for k, (new, old) in enumerate(zip(after, t.params), start=1):
        for which, name in enumerate((f"W^{k}", f"b^{k}")):
            V = _random(t.rng, old[which].a.shape)
            step = dot_p(mod_p(new[which].a - old[which].a), V)
            if step != (-t.eta.v * t.ref.along_param(k, which, V)) % P:
                raise Mismatch(f"sgd_step: {name} is not {name} − η ∂L/∂{name} (random direction)")
    _same_loss("sgd_step", value, t)  # J at the parameters before the step
    return f"J, and W^k, b^k after one step with a random η, k = 1..{len(after)}", calls


CHECKS: dict[str, Callable[[Model, Trial], tuple[str, int]]] = {
    "forward": _check_forward,
    "loss": _check_loss,
    "adjoint": _check_adjoint,
    "loss_and_grad": _check_gradients,
    "sgd_step": _check_sgd,
}


def verify_model(
    model: Model, *, trials: int = 1, seed: int = 0, progress: Progress | None = None
) -> Report:
    """Prove that the model's generated kernels compute what the chain rule gives (see module)."""
    return kernel_proof(
        model,
        lambda rng: _trial(model, rng),
        lambda kernel, point: CHECKS[kernel](model, point),
        trials,
        seed,
        progress,
        "through J(θ)",
    )


def kernel_proof(
    model: Model | GraphModel,
    trial: Callable[[random.Random], Any],
    check: Callable[[str, Any], tuple[str, int]],
    trials: int,
    seed: int,
    progress: Progress | None,
    through: str,
) -> Report:
    """The proof of a compiled model's kernels: ``trials`` random points (``trial``), then
    each kernel run from its source and compared at every point (``check``)."""
    spec = model.spec
    check_exact_memory(spec)
    report = Report(
        f"Proof that the compiled kernels are backpropagation for {spec.describe()}",
        spec,
        preparation="the exact reference",
    )
    rng = random.Random(seed)
    start = time.perf_counter()
    points = [retry(lambda: trial(rng)) for _ in range(trials)]
    report.derive_seconds = time.perf_counter() - start
    if progress:
        progress(
            f"verify: exact reference for {spec.describe()} at B = {BATCH_SIZE} "
            f"in {report.derive_seconds:.2f} s"
        )
    method = (
        f"its source, run over GF(2^61-1) at batch size {BATCH_SIZE}, against exact dual numbers "
        + through
    )
    for kernel in KERNEL_ORDER:
        report.steps.append(
            timed_step(
                kernel,
                f"the generated {kernel} kernel computes its equations",
                method,
                lambda kernel=kernel: _verdict(check, kernel, points),  # type: ignore[misc]
                progress,
            )
        )
    return report


def check_exact_memory(spec: NetworkSpec | GraphSpec) -> None:
    """Refuse, with the numbers, a network whose exact check (a Python integer per entry) cannot
    fit in half this machine's memory."""
    need, have = spec.n_params * EXACT_BYTES_PER_PARAM, available_memory()
    if need > have // 2:
        name = spec.describe() if isinstance(spec, GraphSpec) else "-".join(map(str, spec.widths))
        raise ValueError(
            f"the exact check of network {name} needs about "
            f"{need / 2**30:,.1f} GiB ({spec.n_params:,} parameters, each an exact number in "
            f"each of its copies); this machine has {have / 2**30:,.1f} GiB of memory"
        )


def _verdict(
    check: Callable[[str, Any], tuple[str, int]], kernel: str, points: list[Any]
) -> tuple[bool, str]:
    checked, calls = "", 0
    try:
        for point in points:
            checked, calls = check(kernel, point)
    except Mismatch as exc:
        return False, str(exc)
    except Degenerate:
        return False, "the kernel divided by zero at the sampled point"
    degree = max(p.ref.max_deg for p in points) + 2
    bound = min(1.0, degree * (1 + calls * (calls - 1) / 2) / P) ** len(points)
    where = f"{len(points)} random point{'s' if len(points) > 1 else ''}"
    return True, (
        f"{checked}: equal exactly at {where} of GF(2^61-1)\nchance that a wrong kernel agrees "
        f"≤ {bound:.1e} (Schwartz–Zippel and oracle collisions; 1/p per random direction)"
    )
