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

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import sympy as sp
from sympy import HadamardProduct, Lambda, OneMatrix
from sympy.core.function import AppliedUndef
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

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
    mistake: str | None = None  # None when right; else one of grading.MISTAKES
    hint: str = ""  # one sentence on the slip, in the student's terms
    layer: int | None = None  # the first layer where the rule fails

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
        if self.mistake:
            lines.append(f"  mistake: {self.mistake}: {self.hint}")
        if self.counterexample:
            lines += ["  " + line for line in self.counterexample.splitlines()]
        return "\n".join(lines)


def check_rule(
    spec: NetworkSpec, rule: str, candidate: object, seed: int = 0, layout: str = "rows"
) -> RuleReport:
    """Check ``candidate`` (a callable, or a SymPy matrix expression) for ``rule``.

    A callable is called in this process with keyword arguments (``ARGUMENTS[rule]``), NumPy
    arrays with samples as rows (``layout="columns"``: as columns), at random KKT-consistent
    states, and judged by ``grading``: right, or the kind of slip (``report.mistake``) with a
    hint. To grade code you do not trust, use ``lbp.grade`` (a separate process).
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError(f"spec must be a lagrange_bp.NetworkSpec, got {type(spec).__name__}")
    if spec.weight_decay:
        raise ValueError(
            f"the rules are those of the objective without weight decay (the weight_gradient "
            f"candidate gets no W); give a spec with weight_decay=0, not {spec.weight_decay!r}"
        )
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    if layout not in ("rows", "columns"):
        raise ValueError(f"layout must be 'rows' or 'columns', got {layout!r}")
    if isinstance(candidate, sp.Basic):
        return _check_symbolic(spec, rule, candidate)
    if not callable(candidate):
        raise TypeError(
            f"candidate must be a callable ({ARGUMENTS[rule]}) or a SymPy matrix "
            f"expression, got {type(candidate).__name__}"
        )
    from .grading import check_here

    return check_here(spec, rule, candidate, seed, layout)


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
    """Equal to the derived rule: as matrix expressions (any sizes, σ abstract), else entry by
    entry at n = 2, 3, 4, B = 2 (σ abstract: Hadamard order, transposes of products, sums and
    ones-products, factored scalars), else at the KKT point X = σ(Z) with this network's σ
    (σ' written in X, such as X ⊙ (1 − X) for sigmoid). Wrong: the kind of slip, by testing
    the usual slips against the candidate entry by entry (``_classify_symbolic``)."""
    expected = expected_generic(spec, rule)
    report = RuleReport(rule, spec, True, "symbolic, generic layer, σ abstract")
    if not isinstance(candidate, sp.MatrixExpr):
        report.ok, report.mistake = False, "shape"
        report.hint = report.counterexample = (
            f"the candidate is a scalar {type(candidate).__name__}; "
            f"expected a matrix expression shaped {expected.shape}"
        )
        return report
    if candidate.shape != expected.shape:
        report.ok, report.mistake = False, "shape"
        report.hint = f"your result has shape {candidate.shape}, the derived one {expected.shape}"
        kind, hint = _classify_symbolic(candidate, expected)  # equal widths make it comparable
        if kind in ("transpose", "wrong_layer"):
            report.mistake, report.hint = kind, hint
        report.counterexample = (
            f"shape {candidate.shape} ≠ expected {expected.shape}: "
            f"expected {text(normalize(expected))}"
        )
        return report
    shown = f"{text(normalize(candidate))} = {text(normalize(expected))}"
    if is_zero(candidate - expected):
        report.checked = [f"{shown} exactly"]
        return report
    try:
        same = _equal(_explicit(candidate, SIZES), _explicit(expected, SIZES))
    except Exception as exc:  # mismatched widths, or symbols that are not the generic layer's
        report.ok = False
        report.mistake, report.hint = _classify_symbolic(candidate, expected)
        report.counterexample = (
            f"the candidate cannot be evaluated with the generic-layer symbols of "
            f"lagrange_bp.rules.generic at distinct widths ({type(exc).__name__}: {exc})"
        )
        if report.mistake == "other":
            report.hint = report.counterexample
        return report
    if same:
        report.method = f"symbolic, entry by entry at {_sizes(SIZES)}, σ abstract ({same})"
        report.checked = [f"{shown} entry by entry"]
        return report
    at_kkt = _equal_at_kkt(spec, rule, candidate, expected)
    if at_kkt:
        report.method = (
            f"symbolic, entry by entry at {_sizes(SMALL)} and the KKT point X = σ(Z), "
            f"σ of this network ({at_kkt})"
        )
        report.checked = [f"{shown} where X^k = σ_k(Z^k)"]
        return report
    report.ok = False
    report.mistake, report.hint = _classify_symbolic(candidate, expected)
    try:
        diff = _numeric_difference(candidate, expected)
    except (TypeError, ValueError) as exc:  # symbols that are not the generic layer's
        diff = (
            "the candidate cannot be evaluated with the generic-layer symbols of "
            f"lagrange_bp.rules.generic ({type(exc).__name__}: {exc})"
        )
    report.counterexample = (
        f"expected {text(normalize(expected))}\ngot      {text(normalize(candidate))}"
        + (f"\n{diff}" if diff else "")
    )
    return report


SIZES = {N_PREV: 2, N_K: 3, N_NEXT: 4, BATCH: 2}
_D = {SIGMA_K: sp.Function("σ'_k"), SIGMA_NEXT: sp.Function("σ'_{k+1}")}
SMALL = {N_PREV: 2, N_K: 2, N_NEXT: 2, BATCH: 2}
SQUARE = {N_PREV: 2, N_K: 2, N_NEXT: 2, BATCH: 5}  # B = 5: a 1/B slip is not a factor 2
_GENERIC = (
    LAYER.X_prev,
    LAYER.X,
    LAYER.X_next,
    LAYER.Lam,
    LAYER.Lam_next,
    LAYER.W,
    LAYER.b,
    LAYER.W_next,
    LAYER.b_next,
    LAYER.Y,
)


def _sizes(sizes: dict[sp.Symbol, int]) -> str:
    n = [sizes[N_PREV], sizes[N_K], sizes[N_NEXT]]
    return f"n_(k-1), n_k, n_(k+1) = {', '.join(map(str, n))}, B = {sizes[BATCH]}"


def _entries(m: sp.MatrixSymbol, sizes: dict[sp.Symbol, int]) -> sp.ImmutableMatrix:
    rows, cols = (int(sp.sympify(d).subs(sizes)) for d in m.shape)
    return sp.ImmutableMatrix(
        rows, cols, lambda i, j: sp.Symbol(f"{m.name}[{i + 1},{j + 1}]", real=True)
    )


def _explicit(
    e: sp.Basic,
    sizes: dict[sp.Symbol, int],
    sigma: tuple[sp.Lambda, sp.Lambda] | None = None,
) -> sp.Matrix:
    """``e`` as an explicit matrix at ``sizes``: every generic symbol a matrix of entries; with
    ``sigma`` = (σ_k, σ_{k+1}) concrete, also X^k = σ_k(Z^k) and X^{k+1} = σ_{k+1}(Z^{k+1})."""
    table = {m: _entries(m, sizes) for m in _GENERIC}
    if sigma is None:  # σ' stays abstract: an undefined function of its own, entry by entry
        e = e.replace(
            lambda t: isinstance(t, Lambda) and isinstance(t.expr, sp.Derivative),
            lambda t: Lambda(t.variables, _D[t.expr.expr.func](*t.variables)),
        )
    else:
        e = e.replace(SIGMA_K, sigma[0]).replace(SIGMA_NEXT, sigma[1])
        e = e.replace(lambda t: isinstance(t, Lambda), lambda t: Lambda(t.variables, t.expr.doit()))
        ones = sp.ones(1, sizes[BATCH])
        Z = table[LAYER.W] * table[LAYER.X_prev] + table[LAYER.b] * ones
        table[LAYER.X] = sp.ImmutableMatrix(Z.applyfunc(sigma[0]))
        Z_next = table[LAYER.W_next] * table[LAYER.X] + table[LAYER.b_next] * ones
        table[LAYER.X_next] = sp.ImmutableMatrix(Z_next.applyfunc(sigma[1]))
    e = e.subs(sizes).xreplace({m.subs(sizes): table[m] for m in _GENERIC})
    return sp.Matrix(e.doit().as_explicit()).doit()


def _equal(a: sp.Matrix, b: sp.Matrix) -> str:
    """ "exact" when every entry of a − b expands to 0; "numeric" when not, but a = b at three
    random points (every undefined function — σ, σ' — replaced by its own random smooth
    function, so only an identity in them passes); "" when they differ."""
    if a.shape != b.shape:
        return ""
    diff = [sp.expand(x - y) for x, y in zip(a, b)]
    if all(d == 0 for d in diff):
        return "exact"
    if any(d.has(sp.matrices.expressions.matexpr.MatrixElement) for d in diff):
        return ""  # entries of a matrix that is not the generic layer's: not comparable
    rng = np.random.default_rng(1)
    pairs = [(x, y) for x, y, d in zip(a, b, diff) if d != 0]
    symbols = sorted(set().union(*(d.free_symbols for d in diff)), key=sp.default_sort_key)
    funcs = {f.func for d in diff for f in d.atoms(AppliedUndef)}
    for _ in range(3):
        values: dict[sp.Basic, sp.Basic] = {x: sp.Float(rng.uniform(0.2, 0.9)) for x in symbols}
        smooth = {
            f: Lambda(ARG_U, sp.sin(sp.Float(rng.uniform(0.5, 1.5)) * ARG_U + rng.uniform(-1, 1)))
            for f in sorted(funcs, key=str)
        }
        for x, y in pairs:
            vx, vy = (_value(e, smooth, values) for e in (x, y))
            if not abs(vx - vy) <= 1e-10 * (1.0 + abs(vy)):
                return ""
    return "numeric"


def _value(e: sp.Expr, smooth: dict, values: dict) -> complex:
    e = e.replace(lambda t: isinstance(t, AppliedUndef), lambda t: smooth[t.func](*t.args))
    return complex(e.xreplace(values).doit().evalf(30))


def _equal_at_kkt(
    spec: NetworkSpec, rule: str, candidate: sp.MatrixExpr, expected: sp.MatrixExpr
) -> str:
    """The layers of ``spec`` where the candidate equals the rule at X = σ(Z), as text ("" if
    some layer differs, or the rule has no σ to make concrete)."""
    if rule == "output_adjoint":
        return ""
    acts: list[Any] = [get_activation(a) for a in spec.activations]
    done = []
    for k in range(1, spec.depth + 1):
        if rule == "adjoint" and k == spec.depth:
            continue
        pair = [acts[k - 1], acts[min(k, spec.depth - 1)]]
        if not all(a.elementwise for a in pair):
            continue
        sigma = (Lambda(ARG_U, pair[0].of(ARG_U)), Lambda(ARG_U, pair[1].of(ARG_U)))
        try:
            how = _equal(_explicit(candidate, SMALL, sigma), _explicit(expected, SMALL, sigma))
        except Exception:  # a candidate that cannot be evaluated is not equal
            return ""
        if not how:
            return ""
        names = pair[0].text + (f", {pair[1].text}" if rule == "adjoint" else "")
        done.append(f"layer {k}: {names}, {how}")
    return "; ".join(done)


def _classify_symbolic(candidate: sp.MatrixExpr, expected: sp.MatrixExpr) -> tuple[str, str]:
    """The kind of slip: the candidate compared, entry by entry at square sizes with σ
    abstract, with what each usual slip turns the derived rule into."""
    from .grading import HINTS

    try:
        got = _explicit(candidate, SQUARE)
        want = _explicit(expected, SQUARE)
    except Exception as exc:
        return "other", f"the candidate cannot be evaluated ({type(exc).__name__})"
    B = SQUARE[BATCH]
    if _equal(got, -want):
        return "sign", HINTS["sign"]
    if _equal(got, want / B):
        return "batch_factor", HINTS["batch_factor_more"]
    if _equal(got, want * B):
        return "batch_factor", HINTS["batch_factor_less"]
    if got.shape[::-1] == want.shape and _equal(got, want.T):
        return "transpose", HINTS["transpose"]
    d_k = Lambda(ARG_U, sp.Derivative(SIGMA_K(ARG_U), ARG_U))
    d_next = Lambda(ARG_U, sp.Derivative(SIGMA_NEXT(ARG_U), ARG_U))
    slips = {
        "missing_derivative": expected.replace(
            lambda t: isinstance(t, ElementwiseApplyFunction) and t.function.has(sp.Derivative),
            lambda t: sp.OneMatrix(*t.shape),
        ),
        "derivative_argument": expected.xreplace(
            {
                ElementwiseApplyFunction(d_k, LAYER.Z): ElementwiseApplyFunction(d_k, LAYER.X),
                ElementwiseApplyFunction(d_next, LAYER.Z_next): ElementwiseApplyFunction(
                    d_next, LAYER.X_next
                ),
            }
        ),
        "transpose": expected.xreplace(
            {
                LAYER.W_next.T: LAYER.W_next,
                LAYER.W: LAYER.W.T,
                LAYER.X_prev.T: LAYER.X_prev,
            }
        ),
        "wrong_layer": expected.xreplace(
            {
                LAYER.W_next: LAYER.W,
                LAYER.b_next: LAYER.b,
                LAYER.Lam_next: LAYER.Lam,
                LAYER.X: LAYER.X_prev,
            }
        ).replace(SIGMA_NEXT, SIGMA_K),
    }
    for kind, slip in slips.items():
        if slip == expected:
            continue
        try:
            if _equal(got, _explicit(slip, SQUARE)):
                if kind == "wrong_layer":
                    return kind, (
                        "your result uses one layer's symbols where the rule needs the next "
                        "layer's: check which layer's W, Z, X or Λ each factor belongs to"
                    )
                return kind, HINTS[kind]
        except Exception:
            continue
    nonzero = [(g, w) for g, w in zip(got, want) if w != 0]
    if nonzero:
        factor = sp.simplify(nonzero[0][0] / nonzero[0][1])
        if factor.is_number and factor != 0 and _equal(got, want * factor):
            return "scale", HINTS["scale"].format(factor=float(factor))
    return "other", HINTS["other"].format(layer="k")


def _numeric_difference(candidate: sp.MatrixExpr, expected: sp.MatrixExpr) -> str | None:
    """Evaluate both at small distinct sizes with σ = tanh; a differing entry, or None."""
    rng = np.random.default_rng(0)
    for trial in range(3):
        table = {}
        for m in _GENERIC:
            shape = tuple(int(sp.sympify(d).subs(SIZES)) for d in m.shape)
            values = (
                rng.uniform(0.2, 1.0, size=shape)
                if m is LAYER.X or m is LAYER.Y
                else rng.normal(size=shape)
            )
            table[m.subs(SIZES)] = sp.ImmutableMatrix(values.round(3).tolist())
        vals = []
        for e in (candidate, expected):
            e = e.replace(SIGMA_K, sp.tanh).replace(SIGMA_NEXT, sp.tanh)
            e = e.replace(
                lambda t: isinstance(t, Lambda), lambda t: Lambda(t.variables, t.expr.doit())
            )
            e = e.subs(SIZES).xreplace(table)
            vals.append(np.array(sp.Matrix(e.doit().as_explicit()).evalf(), dtype=float))
        if vals[0].shape != vals[1].shape:
            return None
        if not np.allclose(vals[0], vals[1], rtol=1e-9, atol=1e-12):
            i = tuple(
                int(v)
                for v in np.unravel_index(np.argmax(np.abs(vals[0] - vals[1])), vals[0].shape)
            )
            one = tuple(v + 1 for v in i)
            return (
                f"counterexample: with n_(k-1) = 2, n_k = 3, n_(k+1) = 4, B = 2, σ = tanh "
                f"and random entries (trial {trial + 1}), entry {one}: expected "
                f"{vals[1][i]:.10g}, got {vals[0][i]:.10g}"
            )
    return None


__all__ = ["RULES", "RuleReport", "check_rule", "expected_generic", "generic"]
