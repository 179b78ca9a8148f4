"""The batch problem at concrete sizes: the output condition with J's 1/B, and a worked example.

``derive(spec)`` treats one sample, L = ℓ + Σ_k λ^kᵀ(x^k − σ_k(z^k)). For a batch of B samples
J = (1/B) Σ_i ℓ(y_i, x_i^N) and L = Σ_i L_i with L_i = ℓ_i/B + Σ_k λ_i^kᵀ(x_i^k − σ_k(z_i^k)):
L_i differs from the one-sample L only in the factor 1/B of ℓ, and ℓ contains x^N alone, so
every condition but ∂L_i/∂x^N = 0 is the derived one, unchanged (the multipliers, and through
them the gradients, carry the 1/B). ``batch_output_adjoint`` differentiates that condition.

``worked_example`` evaluates the derived equations (stock ``sympy.lambdify``) on B = 2 samples,
sums the per-sample gradients ∂L/∂θ = Σ_i ∂L_i/∂θ, takes one SGD step, and checks every number
against the compiled model (``Model.forward``, ``adjoint``, ``loss_and_grad``, ``sgd_step``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .functions import get_loss
from .kkt import Derivation, solve_linear
from .matrices import BATCH
from .model import Model, Params

EXAMPLE_BATCH = 2
EXAMPLE_LR = 0.1
FULL_MAX_PARAMS = 50  # the example is printed in full up to this many parameters ...
FULL_MAX_WIDTH = 6  # ... and this width (a matrix row must fit on the page)
SHOWN = 4  # entries of layer 1 shown for a larger network
TOLERANCE = 1e-9  # derived vs compiled, relative to max(1, |value|)
KINK = 1e-6  # pre-activations closer to 0 than this make the data draw again (relu's kink)


@dataclass(frozen=True)
class OutputCondition:
    """∂L_i/∂x^N_j = condition = 0, solved: λ^N_j = adjoint (B symbolic)."""

    state: sp.Symbol
    multiplier: sp.Symbol
    condition: sp.Expr
    adjoint: sp.Expr


def batch_output_adjoint(d: Derivation) -> list[OutputCondition]:
    """The output-layer conditions of L_i = ℓ/B + Σ_k λ^kᵀ(x^k − σ_k(z^k)), derived by SymPy.

    Checks that the derived one-sample condition is ∂ℓ/∂x^N_j + λ^N_j (x^N enters L only in ℓ
    and in its own constraint), so the batch one is (1/B) ∂ℓ/∂x^N_j + λ^N_j."""
    n = d.spec.depth
    out = []
    for x, lam in zip(d.symbols.x[n], d.symbols.lam[n]):
        if sp.expand(d.stationarity[x] - sp.diff(d.loss, x) - lam) != 0:
            raise ArithmeticError(f"∂L/∂{x} is not ∂ℓ/∂{x} + {lam}: {d.stationarity[x]}")
        condition = sp.factor_terms(sp.diff(d.loss, x) / BATCH) + lam
        out.append(OutputCondition(x, lam, condition, solve_linear(condition, lam)))
    return out


@dataclass
class WorkedExample:
    """One SGD step on B samples; arrays have samples as rows, as the compiled model's do.

    ``full``: every entry was computed (and is shown); otherwise the gradients and updates of
    the first ``SHOWN`` entries of W^1's first row and of b^1 only."""

    seed: int
    X: np.ndarray  # (B, n_0)
    Y: np.ndarray  # (B, n_N)
    params: Params
    Z: list[np.ndarray]  # z^k, (B, n_k), k = 1..N
    states: list[np.ndarray]  # x^k, (B, n_k), k = 1..N
    lams: list[np.ndarray]  # λ^k, (B, n_k), k = 1..N, with the 1/B
    loss: float  # J
    grads: dict[sp.Symbol, float]  # ∂L/∂θ = Σ_i ∂L_i/∂θ for the entries computed
    initial: dict[sp.Symbol, float]  # θ for the same entries
    updated: dict[sp.Symbol, float]  # θ − η ∂L/∂θ
    loss_after: float | None  # J at the updated parameters (full examples)
    full: bool
    lr: float = EXAMPLE_LR

    @property
    def batch(self) -> int:
        return len(self.X)


def shows_in_full(d: Derivation) -> bool:
    """Whether the worked example fits the page in full: few parameters, narrow layers."""
    return d.spec.n_params <= FULL_MAX_PARAMS and max(d.spec.widths) <= FULL_MAX_WIDTH


def example_data(d: Derivation, seed: int) -> tuple[np.ndarray, np.ndarray, Params]:
    """Inputs in [−1, 1], targets (one-hot for a classification loss, else in [0, 1]), the
    model's initial weights (``init_params(seed)``) and biases in [−0.2, 0.2], all rounded to
    two decimals so a reader can redo the arithmetic."""
    spec = d.spec
    rng = np.random.default_rng(seed)
    B, n0, nN = EXAMPLE_BATCH, spec.widths[0], spec.widths[-1]
    X = np.round(rng.uniform(-1, 1, (B, n0)), 2)
    if get_loss(spec.loss).classification:
        Y = np.eye(nN)[[i % nN for i in range(B)]]
    else:
        Y = np.round(rng.uniform(0, 1, (B, nN)), 2)
    params = [
        (np.round(W, 2), np.round(rng.uniform(-0.2, 0.2, len(b)), 2))
        for W, b in Model(spec).init_params(seed)
    ]
    return X, Y, params


class _Evaluator:
    """Derived expressions as float functions (stock lambdify), each compiled once.

    Each pre-activation W^k x^{k-1} + b^k written out in an expression is read as its z^k_i,
    whose value comes from the pre-activation's own equation: the same number, and an
    expression of a few symbols instead of a few hundred (a wide softmax's every output
    contains every z)."""

    def __init__(self, d: Derivation) -> None:
        self._fns: dict[tuple[sp.Expr, bool], tuple[Callable[..., float], list[sp.Symbol]]] = {}
        self._z = d.z_display()

    def __call__(self, expr: sp.Expr, values: dict[sp.Symbol, float], short: bool = True) -> float:
        if (expr, short) not in self._fns:
            shown = expr.xreplace(self._z) if short else expr
            args = sorted(shown.free_symbols, key=str)
            plain = [sp.Symbol(f"v{i}") for i in range(len(args))]  # names lambdify takes as is
            fn = sp.lambdify(plain, shown.xreplace(dict(zip(args, plain))))
            self._fns[expr, short] = (fn, args)
        fn, args = self._fns[expr, short]
        try:
            with np.errstate(all="ignore"):
                return float(fn(*[values[a] for a in args]))
        except (OverflowError, ZeroDivisionError, ValueError):  # Python floats raise: not finite
            return float("nan")


def _sample_values(
    d: Derivation, X: np.ndarray, Y: np.ndarray, params: Params
) -> list[dict[sp.Symbol, float]]:
    """Per sample, the inputs, targets and parameters as {symbol: value}, B included."""
    shared: dict[sp.Symbol, float] = {BATCH: float(len(X))}
    for (Ws, bs), (W, b) in zip(d.params, params):
        shared |= {s: float(v) for s, v in zip(Ws, W.ravel())}
        shared |= {s: float(v) for s, v in zip(bs, b)}
    return [
        shared
        | {s: float(v) for s, v in zip(d.input, x)}
        | {s: float(v) for s, v in zip(d.target, y)}
        for x, y in zip(X, Y)
    ]


def _forward(d: Derivation, values: dict[sp.Symbol, float], ev: _Evaluator) -> None:
    """z^k and x^k of one sample from the derived equations (∂L/∂λ = 0), in solving order."""
    z_of = {eq.lhs: eq.rhs for eq in d.preactivations}
    forward = iter(d.forward)
    for k in range(1, d.spec.depth + 1):
        for z in d.symbols.z[k]:
            values[z] = ev(z_of[z], values, short=False)
        for _ in d.symbols.x[k]:
            eq = next(forward)
            values[eq.lhs] = ev(eq.rhs, values)


def _adjoint(d: Derivation, values: dict[sp.Symbol, float], ev: _Evaluator) -> None:
    """λ^N with the 1/B, then the derived recursion λ^{N-1}, …, λ^1 (∂L/∂x = 0)."""
    output = batch_output_adjoint(d)
    for c in output:
        values[c.multiplier] = ev(c.adjoint, values)
    for eq in d.adjoint[len(output) :]:
        values[eq.lhs] = ev(eq.rhs, values)


def _layer(d: Derivation, samples: list[dict[sp.Symbol, float]], name: str) -> list[np.ndarray]:
    sym = {"z": d.symbols.z, "x": d.symbols.x, "λ": d.symbols.lam}[name]
    return [np.array([[v[s] for s in sym[k]] for v in samples]) for k in range(1, d.spec.depth + 1)]


def _loss(d: Derivation, samples: list[dict[sp.Symbol, float]], ev: _Evaluator) -> float:
    return sum(ev(d.loss, v) for v in samples) / len(samples)


def shown_params(d: Derivation, full: bool) -> list[sp.Symbol]:
    """The parameters whose gradient the example computes: all, or the first few of layer 1."""
    if full:
        return d.param_symbols()
    W, b = d.params[0]
    return list(W[0, : min(SHOWN, W.shape[1])]) + list(b[: min(SHOWN, len(b))])


def _draw(
    d: Derivation, seed: int, ev: _Evaluator
) -> tuple[int, list[dict[sp.Symbol, float]], np.ndarray, np.ndarray, Params]:
    """The first seed from ``seed`` on whose pre-activations are all away from 0 (relu's kink,
    where rounding could pick either side), preferring one where each hidden layer has both
    signs (so a relu layer shows 𝕀[z > 0] = 0 as well as 1); its per-sample values, forward."""
    fallback = None
    for s in range(seed, seed + 20):
        X, Y, params = example_data(d, s)
        samples = _sample_values(d, X, Y, params)
        for v in samples:
            _forward(d, v, ev)
        zs = [[v[z] for v in samples for z in d.symbols.z[k]] for k in d.symbols.z]
        drawn = (s, samples, X, Y, params)
        if min(abs(z) for layer in zs for z in layer) <= KINK:
            continue
        if all(min(layer) < 0 < max(layer) for layer in zs[:-1]):
            return drawn
        fallback = fallback or drawn
    return fallback or drawn


def worked_example(d: Derivation, seed: int = 0) -> WorkedExample | None:
    """One step of gradient descent on B = 2 samples from the derived equations, every number
    checked against the compiled model (``ArithmeticError`` if one differs by more than
    1e-9 relative). None when the numbers are not finite at the drawn data (a loss or
    activation undefined there)."""
    ev = _Evaluator(d)
    full = shows_in_full(d)
    s, samples, X, Y, params = _draw(d, seed, ev)
    for v in samples:
        _adjoint(d, v, ev)
    wanted = shown_params(d, full)
    grads = {p: sum(ev(d.gradients[p], v) for v in samples) for p in wanted}
    start = {p: v for p, v in samples[0].items() if p in grads}
    updated = {p: start[p] - EXAMPLE_LR * g for p, g in grads.items()}
    loss_after = None
    if full:
        after = [v | updated for v in samples]
        for v in after:
            _forward(d, v, ev)
        loss_after = _loss(d, after, ev)
    example = WorkedExample(
        seed=s,
        X=X,
        Y=Y,
        params=params,
        Z=_layer(d, samples, "z"),
        states=_layer(d, samples, "x"),
        lams=_layer(d, samples, "λ"),
        loss=_loss(d, samples, ev),
        grads=grads,
        initial=start,
        updated=updated,
        loss_after=loss_after,
        full=full,
    )
    numbers = [example.loss, example.loss_after or 0.0, *grads.values()]
    numbers += [a for m in (*example.states, *example.lams) for a in m.ravel()]
    if not np.isfinite(numbers).all():
        return None
    cross_check(d, example)
    return example


def cross_check(d: Derivation, ex: WorkedExample) -> None:
    """Compare every number of the example with the compiled model's; raise if one differs."""
    model = Model(d.spec)
    index = {
        s: (k, which, i)
        for k, pair in enumerate(d.params)
        for which, m in enumerate(pair)
        for i, s in enumerate(m)
    }
    loss, grads = model.loss_and_grad(ex.params, ex.X, ex.Y)
    step = [(W.copy(), b.copy()) for W, b in ex.params]
    model.sgd_step(step, ex.X, ex.Y, ex.lr)
    pairs: list[tuple[str, float, float]] = [("J", ex.loss, loss)]
    pairs += _pairs("x^N", ex.states[-1], model.forward(ex.params, ex.X))
    for k, (lam, compiled) in enumerate(zip(ex.lams, model.adjoint(ex.params, ex.X, ex.Y)), 1):
        pairs += _pairs(f"λ^{k}", lam, compiled)
    for p, g in ex.grads.items():
        k, which, i = index[p]
        pairs.append((f"∂L/∂{p}", g, float(grads[k][which].ravel()[i])))
        pairs.append((f"updated {p}", ex.updated[p], float(step[k][which].ravel()[i])))
    if ex.loss_after is not None:
        pairs.append(("J after the step", ex.loss_after, model.loss(step, ex.X, ex.Y)))
    for name, ours, theirs in pairs:
        if not abs(ours - theirs) <= TOLERANCE * max(1.0, abs(theirs)):
            raise ArithmeticError(
                f"worked example: {name} from the derived equations is {ours!r}, "
                f"the compiled model gives {theirs!r}"
            )


def _pairs(name: str, ours: np.ndarray, theirs: np.ndarray) -> list[tuple[str, float, float]]:
    flat = zip(ours.ravel(), np.asarray(theirs).ravel())
    return [(f"{name}[{i}]", float(a), float(b)) for i, (a, b) in enumerate(flat)]
