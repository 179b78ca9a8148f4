"""Check a user's own derived rule against the KKT equations: ``check_rule``.

A rule is a Python callable (checked numerically) or a SymPy matrix expression in the
generic-layer symbols of ``generic`` (checked symbolically). Numerically, the candidate is
called with keyword arguments (NumPy arrays, rows = samples) at random KKT-consistent states —
x^k from the forward equations, λ^k and ∂L/∂θ from the generated kernels — for every layer the
rule applies to, in several trials with batch sizes above 1 (so 1/B slips show), and compared
with tolerances far below any sign, transpose, σ' or 1/B slip. A failure is shrunk to the
smallest batch that still shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import sympy as sp
from sympy import HadamardProduct, Lambda, OneMatrix
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .codegen import numpy_function
from .functions import get_activation, get_loss
from .generic import (
    LAYER,
    N_K,
    N_NEXT,
    N_PREV,
    SIGMA_K,
    SIGMA_NEXT,
    derive_generic,
    is_zero,
    normalize,
    output_adjoint_for,
)
from .matrices import ARG_U, BATCH, elementwise
from .model import Model
from .render_generic import text
from .spec import NetworkSpec

RULES = ("forward", "output_adjoint", "adjoint", "weight_gradient", "bias_gradient")
ARGUMENTS = {
    "forward": "W, b, x_prev, sigma",
    "output_adjoint": "x_out, y, batch_size",
    "adjoint": "W_next, z_next, lam_next, dsigma_next",
    "weight_gradient": "z, lam, x_prev, dsigma",
    "bias_gradient": "z, lam, dsigma",
}
BATCHES = (3, 5, 4)
RTOL, ATOL = 1e-9, 1e-12


def _dsigma_generic(fn: object, M: sp.MatrixExpr) -> ElementwiseApplyFunction:
    body = sp.Derivative(fn(ARG_U), ARG_U)  # type: ignore[operator]
    return ElementwiseApplyFunction(Lambda(ARG_U, body), M)


#: The generic-layer symbols for symbolic candidates (samples are columns, as in ``generic``).
generic = SimpleNamespace(
    X_prev=LAYER.X_prev,
    X=LAYER.X,
    X_next=LAYER.X_next,
    Lam=LAYER.Lam,
    Lam_next=LAYER.Lam_next,
    W=LAYER.W,
    b=LAYER.b,
    W_next=LAYER.W_next,
    b_next=LAYER.b_next,
    Y=LAYER.Y,
    B=BATCH,
    Z=LAYER.Z,
    Z_next=LAYER.Z_next,
    ones=OneMatrix(BATCH, 1),
    ones_row=OneMatrix(1, BATCH),
    hadamard=HadamardProduct,
    sigma=lambda M: elementwise(SIGMA_K, M),
    dsigma=lambda M: _dsigma_generic(SIGMA_K, M),
    sigma_next=lambda M: elementwise(SIGMA_NEXT, M),
    dsigma_next=lambda M: _dsigma_generic(SIGMA_NEXT, M),
)


@dataclass
class RuleReport:
    """Whether a candidate rule equals the derived one; where and how it differs if not."""

    rule: str
    spec: NetworkSpec
    ok: bool
    method: str
    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counterexample: str = ""

    def __repr__(self) -> str:
        from .display import rule_repr

        return rule_repr(self)

    def _repr_markdown_(self) -> str:
        from .display import rule_markdown

        return rule_markdown(self)

    def _repr_latex_(self) -> str:
        from .display import rule_latex

        return rule_latex(self)

    def __str__(self) -> str:
        head = (
            f"rule {self.rule!r} for {self.spec.describe()}: "
            f"{'RIGHT' if self.ok else 'WRONG'} ({self.method})"
        )
        lines = [head]
        if self.checked:
            lines.append("  checked: " + "; ".join(self.checked))
        lines += [f"  skipped: {s}" for s in self.skipped]
        if self.counterexample:
            lines += ["  " + line for line in self.counterexample.splitlines()]
        return "\n".join(lines)


def check_rule(spec: NetworkSpec, rule: str, candidate: object, seed: int = 0) -> RuleReport:
    """Check ``candidate`` (a callable, or a SymPy matrix expression) for ``rule``."""
    if not isinstance(spec, NetworkSpec):
        raise TypeError(f"spec must be a lagrange_bp.NetworkSpec, got {type(spec).__name__}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    if isinstance(candidate, sp.Basic):
        return _check_symbolic(spec, rule, candidate)
    if not callable(candidate):
        raise TypeError(
            f"candidate must be a callable ({ARGUMENTS[rule]}) or a SymPy matrix "
            f"expression, got {type(candidate).__name__}"
        )
    return _check_numeric(spec, rule, candidate, seed)


# --- numeric ------------------------------------------------------------------------------
def _callables(
    activation: str,
) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray] | None]:
    """The layer's σ and (elementwise only) σ' on arrays with samples as rows, printed from the
    activation record exactly as the kernels print them."""
    act = get_activation(activation)
    Z = sp.MatrixSymbol("Z", BATCH, sp.Symbol("n", integer=True, positive=True))
    sigma = numpy_function(act.kernel_forward(Z, 1), (Z,))
    if not act.elementwise:
        return sigma, None
    dsigma = numpy_function(elementwise(act.derivative_form.xreplace({_Z: ARG_U}), Z), (Z,))  # type: ignore[attr-defined]
    return sigma, dsigma


_Z = sp.Symbol("z", real=True)


@dataclass
class _State:
    params: list[tuple[np.ndarray, np.ndarray]]
    X: np.ndarray
    Y: np.ndarray
    z: dict[int, np.ndarray]
    x: dict[int, np.ndarray]
    lam: dict[int, np.ndarray]
    grads: list[tuple[np.ndarray, np.ndarray]]


def _state(model: Model, seed: int, batch: int, rows: int | None = None) -> _State:
    spec = model.spec
    rng = np.random.default_rng(seed)
    params = [
        (rng.normal(scale=0.7, size=(m, n)), rng.normal(scale=0.5, size=m))
        for n, m in zip(spec.widths[:-1], spec.widths[1:])
    ]
    X = rng.normal(size=(batch, spec.widths[0]))
    if get_loss(spec.loss).classification:
        Y = np.eye(spec.widths[-1])[rng.integers(0, spec.widths[-1], batch)]
    else:
        Y = rng.normal(size=(batch, spec.widths[-1]))
    if rows is not None:
        X, Y = X[:rows], Y[:rows]
    z, x = {}, {0: X}
    for k, ((W, b), act) in enumerate(zip(params, spec.activations), start=1):
        z[k] = x[k - 1] @ W.T + b
        x[k] = _callables(act)[0](z[k])
    lams = model.adjoint(params, X, Y)
    _, grads = model.loss_and_grad(params, X, Y)
    return _State(params, X, Y, z, x, dict(enumerate(lams, start=1)), grads)


def _cases(
    spec: NetworkSpec, rule: str, st: _State
) -> tuple[list[tuple[int, dict, np.ndarray]], list[str]]:
    """(layer, keyword arguments, expected) for every layer the rule applies to, and skips."""
    n, acts = spec.depth, spec.activations
    cases, skipped = [], []
    if rule == "output_adjoint":
        return [(n, {"x_out": st.x[n], "y": st.Y, "batch_size": len(st.X)}, st.lam[n])], []
    for k in range(1, n + 1):
        W, b = st.params[k - 1]
        sigma, dsigma = _callables(acts[k - 1])
        if rule == "forward":
            cases.append((k, {"W": W, "b": b, "x_prev": st.x[k - 1], "sigma": sigma}, st.x[k]))
        elif rule == "adjoint" and k < n:
            d_next = _callables(acts[k])[1]
            if d_next is None:
                skipped.append(
                    f"layer {k}: layer {k + 1} is softmax, whose σ' is a Jacobian, "
                    "not an elementwise dsigma_next"
                )
                continue
            cases.append(
                (
                    k,
                    {
                        "W_next": st.params[k][0],
                        "z_next": st.z[k + 1],
                        "lam_next": st.lam[k + 1],
                        "dsigma_next": d_next,
                    },
                    st.lam[k],
                )
            )
        elif rule in ("weight_gradient", "bias_gradient"):
            if dsigma is None:
                skipped.append(f"layer {k}: softmax's σ' is a Jacobian, not an elementwise dsigma")
                continue
            args = {"z": st.z[k], "lam": st.lam[k], "dsigma": dsigma}
            if rule == "weight_gradient":
                cases.append((k, args | {"x_prev": st.x[k - 1]}, st.grads[k - 1][0]))
            else:
                cases.append((k, args, st.grads[k - 1][1]))
    return cases, skipped


def _call(
    candidate: Callable[..., Any], args: dict[str, Any], expected: np.ndarray
) -> tuple[np.ndarray | None, str]:
    copies = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    try:
        raw = np.asarray(candidate(**copies))
        if np.iscomplexobj(raw):
            return None, "the candidate returned complex values"
        got = raw.astype(float)
    except Exception as exc:  # the user's code: any failure is a failed check, never a crash
        return None, f"the candidate raised {type(exc).__name__}: {exc}"
    if got.shape != expected.shape:
        return None, f"the candidate returned shape {got.shape}, expected {expected.shape}"
    return got, ""


def _mismatch(got: np.ndarray, expected: np.ndarray) -> tuple[int, ...] | None:
    scale = max(1.0, float(np.max(np.abs(expected))))
    bad = ~np.isclose(got, expected, rtol=RTOL, atol=ATOL * scale)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(got - expected)), got.shape))


def _check_numeric(
    spec: NetworkSpec, rule: str, candidate: Callable[..., Any], seed: int
) -> RuleReport:
    model = Model(spec)
    report = RuleReport(
        rule, spec, True, f"numeric, {len(BATCHES)} random KKT points, rtol {RTOL:g}"
    )
    for trial, batch in enumerate(BATCHES):
        st = _state(model, seed + trial, batch)
        cases, report.skipped = _cases(spec, rule, st)
        for k, args, expected in cases:
            got, why = _call(candidate, args, expected)
            where = None if got is None else _mismatch(got, expected)
            if got is not None and where is None:
                continue
            report.ok = False
            report.counterexample = _explain(
                model, rule, candidate, seed + trial, batch, k, why, got, expected, where
            )
            return report
        if not cases:
            why = (
                "; ".join(report.skipped) + " (use a network with an elementwise activation there)"
            )
            if rule == "adjoint" and spec.depth == 1:
                why = "the adjoint rule (λ^k for k < N) needs at least two layers"
            raise ValueError(f"rule {rule!r} cannot be checked on {spec.describe()}: {why}")
    layers = sorted({k for k, _, _ in _cases(spec, rule, _state(model, seed, 2))[0]})
    report.checked = [
        f"layers {', '.join(map(str, layers))}",
        f"batch sizes {', '.join(map(str, BATCHES))}",
    ]
    return report


def _explain(
    model: Model,
    rule: str,
    candidate: Callable[..., Any],
    seed: int,
    batch: int,
    k: int,
    why: str,
    got: np.ndarray | None,
    expected: np.ndarray,
    where: tuple[int, ...] | None,
) -> str:
    lines = [f"layer {k}, batch size {batch}: " + (why or _entry(rule, where, got, expected))]
    for rows in range(1, batch):  # the smallest batch that still shows it
        st = _state(model, seed, batch, rows)
        case = next((c for c in _cases(model.spec, rule, st)[0] if c[0] == k), None)
        if case is None:
            break
        got_s, why_s = _call(candidate, case[1], case[2])
        where_s = None if got_s is None else _mismatch(got_s, case[2])
        if got_s is not None and where_s is None:
            continue
        lines.append(
            f"smallest failing input: batch size {rows}: "
            + (why_s or _entry(rule, where_s, got_s, case[2]))
        )
        lines += [
            f"  {name} = {_fmt(v)}" for name, v in case[1].items() if isinstance(v, np.ndarray)
        ]
        break
    return "\n".join(lines)


def _entry(
    rule: str, where: tuple[int, ...] | None, got: np.ndarray | None, expected: np.ndarray
) -> str:
    assert where is not None and got is not None
    names = {"weight_gradient": "(i, j)", "bias_gradient": "(i,)"}.get(rule, "(sample, unit)")
    return (
        f"entry {names} = {where}: expected {expected[where]:.10g}, got {got[where]:.10g}"
        f" (the derived rule gives {_rule_text(rule)})"
    )


def _rule_text(rule: str) -> str:
    return {
        "forward": "x^k = sigma(x_prev @ W.T + b)",
        "output_adjoint": "λ^N = −(1/B) ∇_x ℓ(y, x_out)",
        "adjoint": "λ^k = (dsigma_next(z_next) * lam_next) @ W_next",
        "weight_gradient": "∂L/∂W^k = −(dsigma(z) * lam).T @ x_prev",
        "bias_gradient": "∂L/∂b^k = −(dsigma(z) * lam).sum(axis=0)",
    }[rule]


def _fmt(a: np.ndarray) -> str:
    if a.size > 40:
        return f"array of shape {a.shape}"
    return np.array2string(a, precision=4, suppress_small=True).replace("\n", " ")


# --- symbolic -----------------------------------------------------------------------------
def expected_generic(spec: NetworkSpec, rule: str) -> sp.MatrixExpr:
    """The derived rule in the generic-layer symbols, σ abstract (columns are samples)."""
    g = derive_generic()
    return {
        "forward": lambda: elementwise(SIGMA_K, LAYER.Z),
        "output_adjoint": lambda: output_adjoint_for(get_loss(spec.loss)),
        "adjoint": lambda: g.raw["adjoint"],
        "weight_gradient": lambda: g.raw["weight_gradient"],
        "bias_gradient": lambda: g.raw["bias_gradient"],
    }[rule]()


def _check_symbolic(spec: NetworkSpec, rule: str, candidate: sp.Basic) -> RuleReport:
    expected = expected_generic(spec, rule)
    report = RuleReport(rule, spec, True, "symbolic, generic layer, σ abstract")
    if not isinstance(candidate, sp.MatrixExpr):
        report.ok = False
        report.counterexample = (
            f"the candidate is a scalar {type(candidate).__name__}; "
            f"expected a matrix expression shaped {expected.shape}"
        )
        return report
    if candidate.shape != expected.shape:
        report.ok = False
        report.counterexample = (
            f"shape {candidate.shape} ≠ expected {expected.shape}: "
            f"expected {text(normalize(expected))}"
        )
        return report
    if is_zero(candidate - expected):
        report.checked = [f"{text(normalize(candidate))} = {text(normalize(expected))} exactly"]
        return report
    try:
        diff = _numeric_difference(candidate, expected)
    except Exception as exc:  # e.g. symbols that are not the generic layer's
        report.ok = False
        report.counterexample = (
            f"the candidate cannot be evaluated with the generic-layer symbols of "
            f"lagrange_bp.rules.generic ({type(exc).__name__}: {exc})"
        )
        return report
    if diff is None:
        report.method = "symbolic normal forms differ; equal at 3 random instances (σ = tanh)"
        return report
    report.ok = False
    report.counterexample = (
        f"expected {text(normalize(expected))}\ngot      {text(normalize(candidate))}\n" + diff
    )
    return report


def _numeric_difference(candidate: sp.MatrixExpr, expected: sp.MatrixExpr) -> str | None:
    """Evaluate both at small distinct sizes with σ = tanh; a differing entry, or None."""
    rng = np.random.default_rng(0)
    sizes = {N_PREV: 2, N_K: 3, N_NEXT: 4, BATCH: 2}
    layer = LAYER
    symbols = [
        layer.X_prev,
        layer.X,
        layer.X_next,
        layer.Lam,
        layer.Lam_next,
        layer.W,
        layer.b,
        layer.W_next,
        layer.b_next,
        layer.Y,
    ]
    for trial in range(3):
        table = {}
        for m in symbols:
            shape = tuple(int(sp.sympify(d).subs(sizes)) for d in m.shape)
            values = (
                rng.uniform(0.2, 1.0, size=shape)
                if m is layer.X or m is layer.Y
                else rng.normal(size=shape)
            )
            table[m.subs(sizes)] = sp.ImmutableMatrix(values.round(3).tolist())
        vals = []
        for e in (candidate, expected):
            e = e.replace(SIGMA_K, sp.tanh).replace(SIGMA_NEXT, sp.tanh)
            e = e.replace(
                lambda t: isinstance(t, Lambda), lambda t: Lambda(t.variables, t.expr.doit())
            )
            e = e.subs(sizes).xreplace(table)
            vals.append(np.array(sp.Matrix(e.doit().as_explicit()).evalf(), dtype=float))
        if not np.allclose(vals[0], vals[1], rtol=1e-9, atol=1e-12):
            i = tuple(
                int(v)
                for v in np.unravel_index(np.argmax(np.abs(vals[0] - vals[1])), vals[0].shape)
            )
            return (
                f"counterexample: with n_(k-1) = 2, n_k = 3, n_(k+1) = 4, B = 2, σ = tanh "
                f"and random entries (trial {trial + 1}), entry {i}: expected "
                f"{vals[1][i]:.10g}, got {vals[0][i]:.10g}"
            )
    return None


__all__ = ["RULES", "RuleReport", "check_rule", "expected_generic", "generic"]
