"""Step 4b: the generic layer, any depth and widths, in matrix-batch form (DESIGN §4 (b)).

States are columns: X^k is n_k × B (one column per sample), Λ^k likewise, 1 = OneMatrix(1, B),
Z^k = W^k X^{k-1} + b^k 1. Two windows of the batch Lagrangian are differentiated by SymPy's
matrix calculus (the Trace form of DESIGN §5; the sum of traces is kept inside one Trace,
since ``(Tr A + Tr B).diff(M)`` silently returns 0):

  interior:  L_k = Tr(Λ^kᵀ(X^k − σ_k(Z^k)) + Λ^{k+1ᵀ}(X^{k+1} − σ_{k+1}(Z^{k+1})))
  output:    L_N = Tr(B·J + Λ^Nᵀ(X^N − σ_N(Z^N))),  J = (1/B) Σ_i ℓ(y_i, x^N_i)

with σ an undefined elementwise function. The layer's vector–Jacobian product
G^k := J_{σ_k}(Z^k)ᵀ Λ^k (= σ'_k(Z^k) ⊙ Λ^k for elementwise σ) is named once, so that
  forward:  X^k = σ_k(Z^k)          adjoint:  Λ^{k-1} = W^{kᵀ} G^k
  gradient: ∂L/∂W^k = −G^k X^{k-1ᵀ}, ∂L/∂b^k = −G^k 1
For softmax (not elementwise) G^k is derived in index form (symbolic n) and lifted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, lru_cache

import sympy as sp
from sympy import HadamardProduct, Lambda, MatMul, MatrixSymbol, OneMatrix, Trace
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .functions import ACTIVATION_FUNCTIONS

U = sp.Symbol("u", real=True)  # the canonical variable of every elementwise Lambda
B = sp.Symbol("B", integer=True, positive=True)
N_PREV, N_K, N_NEXT = sp.symbols("n_{k-1} n_k n_{k+1}", integer=True, positive=True)


class GenericSymbols:
    """Matrix symbols of layers k-1, k, k+1 with symbolic widths and batch size B."""

    X_prev = MatrixSymbol("X^{k-1}", N_PREV, B)
    X = MatrixSymbol("X^k", N_K, B)
    X_next = MatrixSymbol("X^{k+1}", N_NEXT, B)
    Lam = MatrixSymbol("Λ^k", N_K, B)
    Lam_next = MatrixSymbol("Λ^{k+1}", N_NEXT, B)
    W = MatrixSymbol("W^k", N_K, N_PREV)
    b = MatrixSymbol("b^k", N_K, 1)
    W_next = MatrixSymbol("W^{k+1}", N_NEXT, N_K)
    b_next = MatrixSymbol("b^{k+1}", N_NEXT, 1)
    G = MatrixSymbol("G^k", N_K, B)
    G_next = MatrixSymbol("G^{k+1}", N_NEXT, B)
    Y = MatrixSymbol("Y", N_K, B)  # targets, when k = N

    @property
    def Z(self) -> sp.MatrixExpr:
        return self.W * self.X_prev + self.b * OneMatrix(1, B)

    @property
    def Z_next(self) -> sp.MatrixExpr:
        return self.W_next * self.X + self.b_next * OneMatrix(1, B)


S = GenericSymbols()


def elementwise(fn: object, arg: sp.MatrixExpr) -> ElementwiseApplyFunction:
    """fn applied entry by entry: a SymPy function class, a callable, or an expression in U."""
    body = sp.sympify(fn) if isinstance(fn, sp.Basic) else fn(U)  # type: ignore[operator]
    return ElementwiseApplyFunction(Lambda(U, body), arg)


def normalize(e: sp.Basic) -> sp.Basic:
    """Canonical form for comparing matrix expressions.

    Renames every Lambda's variable to U (each diff makes fresh dummies) and pulls scalar
    factors out of Hadamard products, so that equal expressions compare equal.
    """
    if not isinstance(e, sp.Basic) or not e.args:
        return e
    args = [normalize(a) for a in e.args]
    if isinstance(e, Lambda):
        (v,), body = e.variables, args[1]
        body = body.xreplace({v: U})
        if body.has(sp.Derivative):  # U is real: d|u|/du = sign(u); σ' of an abstract σ stays
            body = body.doit()
        return Lambda(U, body)
    if isinstance(e, HadamardProduct):
        coeff, mats = sp.S.One, []
        for a in args:
            c, m = a.as_coeff_mmul()
            coeff *= c
            mats.append(m.doit() if isinstance(m, MatMul) else m)
        h = HadamardProduct(*mats).doit()
        return h if coeff == 1 else (coeff * h).doit()
    return e.func(*args).doit()


def is_zero(e: sp.Basic) -> bool:
    """Whether a (matrix) expression normalizes to zero."""
    n = normalize(e)
    return n == 0 or isinstance(n, sp.ZeroMatrix)


def solve_identity(expr: sp.MatrixExpr, var: MatrixSymbol) -> sp.MatrixExpr:
    """Solve expr = 0 for var when expr = var + (terms free of var), the KKT shape here."""
    rest = normalize(expr - var)
    if rest.has(var):
        raise ArithmeticError(f"condition is not of the form {var} + f = 0: {expr}")
    return normalize(-rest)


def find_hadamard(expr: sp.Basic, factor: MatrixSymbol) -> sp.MatrixExpr:
    """The unique Hadamard product in expr that has ``factor`` as a factor."""
    found = {
        h
        for h in sp.preorder_traversal(expr)
        if isinstance(h, HadamardProduct) and factor in h.args
    }
    if len(found) != 1:
        raise ArithmeticError(f"expected one Hadamard product with {factor} in {expr}")
    return found.pop()


@dataclass
class GeneralDerivation:
    """The generic-layer equations (σ abstract) and each activation's G^k."""

    interior_lagrangian: sp.Expr
    output_lagrangian: dict[str, sp.Expr]
    forward: sp.Eq  # X^k = σ_k(Z^k)
    adjoint: sp.Eq  # Λ^k = W^{k+1ᵀ} G^{k+1}
    weight_gradient: sp.Eq  # ∂L/∂W^k = −G^k X^{k-1ᵀ}
    bias_gradient: sp.Eq  # ∂L/∂b^k = −G^k 1
    output_adjoint: dict[str, sp.Eq]  # loss -> Λ^N = −(1/B) ∇_X ℓ
    vjp: dict[str, sp.Eq]  # activation -> G^k = J_σ(Z^k)ᵀ Λ^k
    fused_softmax_ce: sp.Eq  # G^N = −(1/B)(X^N − Y) for softmax + cross-entropy
    raw: dict[str, sp.Expr] = field(default_factory=dict)  # derived before naming G
    softmax_index: dict[str, sp.Expr] = field(default_factory=dict)


SIGMA_K, SIGMA_NEXT = sp.Function("σ_k"), sp.Function("σ_{k+1}")


def _constraint(
    Lam: MatrixSymbol, X: MatrixSymbol, sigma: object, Z: sp.MatrixExpr
) -> sp.MatrixExpr:
    return Lam.T * (X - elementwise(sigma, Z))


def _loss_term(loss: str, X: MatrixSymbol, Y: MatrixSymbol) -> sp.MatrixExpr:
    """B·J as a B×B matrix whose trace it is: mse ½(X − Y)ᵀ(X − Y), CE −Yᵀ log(X)."""
    if loss == "mse":
        return (X - Y).T * (X - Y) / (2 * B)
    return -Y.T * elementwise(sp.log, X) / B


@cache
def derive_general() -> GeneralDerivation:
    """Differentiate the two windows of L and name each layer's G^k (see module doc)."""
    s = S
    L = Trace(
        _constraint(s.Lam, s.X, SIGMA_K, s.Z)
        + _constraint(s.Lam_next, s.X_next, SIGMA_NEXT, s.Z_next)
    )
    forward_rhs = normalize(s.X - L.diff(s.Lam))  # ∂L/∂Λ^k = X^k − σ_k(Z^k)
    adjoint_raw = solve_identity(normalize(L.diff(s.X)), s.Lam)
    dW_raw, db_raw = normalize(L.diff(s.W)), normalize(L.diff(s.b))
    H_next, H = find_hadamard(adjoint_raw, s.Lam_next), find_hadamard(dW_raw, s.Lam)
    adjoint = adjoint_raw.xreplace({H_next: s.G_next})
    dW, db = dW_raw.xreplace({H: s.G}), db_raw.xreplace({H: s.G})
    for name, e in (("adjoint", adjoint), ("∂L/∂W", dW), ("∂L/∂b", db)):
        if e.has(s.Lam) or e.has(s.Lam_next):
            raise ArithmeticError(f"{name} is not a function of G alone: {e}")

    out_L, out_adj = {}, {}
    for loss in ("mse", "cross_entropy"):
        out_L[loss] = Trace(_loss_term(loss, s.X, s.Y) + _constraint(s.Lam, s.X, SIGMA_K, s.Z))
        out_adj[loss] = sp.Eq(
            s.Lam, solve_identity(normalize(out_L[loss].diff(s.X)), s.Lam), evaluate=False
        )

    vjp = {"σ": sp.Eq(s.G, H, evaluate=False)}
    for name, act in ACTIVATION_FUNCTIONS.items():
        if name == "softmax":
            continue
        fn = act.function if act.function is not None else (lambda u: u)
        Lc = Trace(_constraint(s.Lam, s.X, fn, s.Z))
        vjp[name] = sp.Eq(s.G, find_hadamard(normalize(Lc.diff(s.W)), s.Lam), evaluate=False)
    index = softmax_index_form()
    vjp["softmax"] = sp.Eq(s.G, softmax_vjp_matrix(s.X, s.Lam), evaluate=False)
    fused = sp.Eq(s.G, normalize(-(s.X - s.Y) / B), evaluate=False)
    return GeneralDerivation(
        interior_lagrangian=L,
        output_lagrangian=out_L,
        forward=sp.Eq(s.X, forward_rhs, evaluate=False),
        adjoint=sp.Eq(s.Lam, adjoint, evaluate=False),
        weight_gradient=sp.Eq(sp.Symbol("∂L/∂W^k"), dW, evaluate=False),
        bias_gradient=sp.Eq(sp.Symbol("∂L/∂b^k"), db, evaluate=False),
        output_adjoint=out_adj,
        vjp=vjp,
        fused_softmax_ce=fused,
        raw={"adjoint": adjoint_raw, "weight_gradient": dW_raw, "bias_gradient": db_raw},
        softmax_index=index,
    )


def softmax_vjp_matrix(Sm: sp.MatrixExpr, Lam: sp.MatrixExpr) -> sp.MatrixExpr:
    """S ⊙ (Λ − 1 1ᵀ (S ⊙ Λ)) column by column: the lift of G_j = S_j (λ_j − Σ_i S_i λ_i)."""
    n = Sm.shape[0]
    return HadamardProduct(Sm, Lam - OneMatrix(n, n) * HadamardProduct(Sm, Lam))


@cache
def softmax_index_form() -> dict[str, sp.Expr]:
    """Softmax's G_j = Σ_i λ_i ∂S_i/∂z_j and the fused softmax–CE G_j, in index form.

    Derived by SymPy from S_i = e^{z_i} / Σ_m e^{z_m} with symbolic n; the range Piecewise is
    collapsed (j is an index in 1..n) and e^{z_i} written as S_i Σ_m e^{z_m}. The fused term
    substitutes λ_i = y_i / (B S_i) (the CE output adjoint) and simplifies under Σ_i y_i = 1.
    """
    i, j, m = sp.symbols("i j m", integer=True)
    n = sp.Symbol("n", integer=True, positive=True)
    z, lam, y, Sx = (sp.IndexedBase(name) for name in ("z", "λ", "y", "S"))
    D = sp.Symbol("D", positive=True)
    total = sp.Sum(sp.exp(z[m]), (m, 1, n))
    g = sp.diff(sp.Sum(lam[i] * sp.exp(z[i]) / total, (i, 1, n)), z[j]).doit()
    g = _collapse_range(g, j, n)
    g = g.xreplace({total: D}).replace(
        lambda e: (
            isinstance(e, sp.exp) and isinstance(e.args[0], sp.Indexed) and e.args[0].base == z
        ),
        lambda e: Sx[e.args[0].indices[0]] * D,
    )
    g = sp.expand(g)
    g = sp.Add(
        *[
            sp.Sum(sp.expand(t.function), *t.limits) if isinstance(t, sp.Sum) else t
            for t in sp.Add.make_args(g)
        ]
    )
    lifted = Sx[j] * (lam[j] - sp.Sum(Sx[i] * lam[i], (i, 1, n)))
    fused = g.xreplace({lam[j]: y[j] / (B * Sx[j])})
    fused = fused.replace(
        lambda e: isinstance(e, sp.Sum),
        lambda e: sp.Sum(e.function.xreplace({lam[i]: y[i] / (B * Sx[i])}), *e.limits),
    )
    fused = sp.expand(sp.simplify(fused))
    fused_unit = fused.xreplace({sp.Sum(y[i], (i, 1, n)): sp.S.One})
    return {
        "vjp": g,
        "vjp_lifted": lifted,
        "fused": fused,
        "fused_unit_sum": fused_unit,
        "j": j,
        "n": n,
        "S": Sx,
        "λ": lam,
        "y": y,
    }


def _collapse_range(e: sp.Expr, j: sp.Symbol, n: sp.Symbol) -> sp.Expr:
    """Take the branch of SymPy's range Piecewise that holds for an index 1 ≤ j ≤ n."""

    def pick(pw: sp.Piecewise) -> sp.Expr:
        for expr, cond in pw.args:
            if cond == sp.And(j >= 1, j <= n) or cond == sp.And(sp.Ge(j, 1), sp.Le(j, n)):
                return expr
        raise ArithmeticError(f"no branch for 1 ≤ {j} ≤ {n} in {pw}")

    return e.replace(lambda x: isinstance(x, sp.Piecewise), pick)


class ElementwisePair(sp.MatrixExpr):
    """f(A_ij, B_ij) entry by entry for two matrices of one shape (a two-argument Lambda)."""

    def __new__(cls, function: Lambda, A: sp.MatrixExpr, Bm: sp.MatrixExpr) -> ElementwisePair:
        return super().__new__(cls, function, A, Bm)

    @property
    def function(self) -> Lambda:
        return self.args[0]

    @property
    def shape(self) -> tuple[sp.Expr, sp.Expr]:
        return self.args[1].shape

    def _entry(self, i: int, j: int, **kwargs: object) -> sp.Expr:
        return self.function(self.args[1][i, j], self.args[2][i, j])

    def _eval_transpose(self) -> ElementwisePair:
        return ElementwisePair(self.function, self.args[1].T, self.args[2].T)

    def doit(self, **hints: object) -> sp.MatrixExpr:
        args = [a.doit(**hints) if hasattr(a, "doit") else a for a in self.args[1:]]
        return ElementwisePair(self.function, *args)


V = sp.Symbol("v", real=True)  # the second variable of a two-argument Lambda


@lru_cache(maxsize=256)
def vjp_for(activation: str) -> sp.Eq:
    """G^k = J_σ(Z^k)ᵀ Λ^k for a built-in or a user's elementwise activation."""
    from .functions import get_activation

    g = derive_general()
    if activation in g.vjp:
        return g.vjp[activation]
    # The generic G^k = σ'(Z^k) ⊙ Λ^k (σ abstract), with σ' SymPy's derivative of the user's σ.
    # (Differentiating the trace with the user's σ inside is not safe: SymPy's matrix calculus
    # turns d/dW of sin(1)·(W X) into sin(W X), silently.)
    dsigma = sp.diff(get_activation(activation).of(U), U)
    return sp.Eq(
        S.G,
        g.vjp["σ"].rhs.replace(
            lambda e: isinstance(e, Lambda) and e.expr.has(SIGMA_K), lambda e: Lambda(U, dsigma)
        ),
        evaluate=False,
    )


@lru_cache(maxsize=256)
def output_adjoint_for(loss: str) -> sp.Eq:
    """Λ^N = −(1/B) ∇_X ℓ for a built-in loss, or entry by entry for a user's Σ_j f(x_j, y_j)."""
    from .functions import X_VAR, Y_VAR, loss_expression

    g = derive_general()
    if loss in g.output_adjoint:
        return g.output_adjoint[loss]
    f = loss_expression(loss)
    df = sp.diff(f, X_VAR).xreplace({X_VAR: U, Y_VAR: V})  # ∂ℓ/∂x_j = f_x(x_j, y_j)
    return sp.Eq(S.Lam, ElementwisePair(Lambda((U, V), -df / B), S.X, S.Y), evaluate=False)
