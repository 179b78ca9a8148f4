"""A graph node's local equations, derived in matrix-batch form (CONVENTIONS §2, §4).

The graph Lagrangian is L = J + Σ_v Tr(Λ_vᵀ (X_v − f_v(X_{u_1}, …, X_{u_m}))): each node v
adds one constraint term, and a state X_u enters the terms of u itself and of its consumers.
For each node kind with m inputs, SymPy's matrix calculus differentiates the one term
(symbolic widths n_v, n_{u_j} and batch B; samples are columns; σ undefined):

  layer   Z_v = Σ_j W_j X_{u_j} + b 1ᵀ,   term = Tr(Λ_vᵀ (X_v − σ(Z_v)))
          ∂/∂Λ_v = 0      →  X_v = σ(Z_v)                          forward
          −∂/∂X_{u_j}     =  W_jᵀ G_v                              contribution to Λ_{u_j}
          ∂/∂W_j, ∂/∂b    =  −G_v X_{u_j}ᵀ, −G_v 1                 contribution to ∂L/∂θ
  add     term = Tr(Λ_vᵀ (X_v − Σ_j X_{u_j}))
          ∂/∂Λ_v = 0      →  X_v = Σ_j X_{u_j};   −∂/∂X_{u_j} = Λ_v

with G_v := Dσ(Z_v)ᵀ Λ_v (σ'(Z_v) ⊙ Λ_v), named as in ``generic``. ∂term/∂X_v = Λ_v is
checked, so that ∂L/∂X_u = 0 reads Λ_u = Σ_c (−∂term_c/∂X_u) − ∂J/∂X_u: the multiplier of a
node is the sum of its consumers' contributions (and the loss's, Λ_o = −(1/B) ∂ℓ/∂x, for an
output), and a shared parameter's gradient the sum of its uses' contributions. Those sums are
what ``graph_kernels`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp
from sympy import MatrixSymbol, OneMatrix, Trace

from .generic import SIGMA_K, find_hadamard, normalize, solve_identity
from .matrices import BATCH, elementwise

N_V = sp.Symbol("n_v", integer=True, positive=True)
KINDS = ("layer", "add")
MAX_INPUTS = 64  # a node kind is derived once per number of inputs


@dataclass(frozen=True)
class NodeEquations:
    """The derived local equations of one node kind with m inputs (samples are columns)."""

    kind: str
    X: MatrixSymbol  # X_v (n_v × B)
    Lam: MatrixSymbol  # Λ_v
    G: MatrixSymbol  # G_v = Dσ(Z_v)ᵀ Λ_v (layer)
    inputs: tuple[MatrixSymbol, ...]  # X_{u_j} (n_{u_j} × B)
    weights: tuple[MatrixSymbol, ...]  # W_j (n_v × n_{u_j}), layer
    bias: MatrixSymbol | None  # b (n_v × 1), layer
    widths: tuple[sp.Symbol, ...]  # n_{u_j}
    term: sp.Expr  # Tr(Λ_vᵀ (X_v − f_v))
    preactivation: sp.MatrixExpr | None  # Z_v, layer
    forward: sp.MatrixExpr  # f_v: X_v = f_v from ∂term/∂Λ_v = 0
    vjp: sp.MatrixExpr | None  # the Hadamard product σ'(Z_v) ⊙ Λ_v named G_v
    to_input: tuple[sp.MatrixExpr, ...]  # −∂term/∂X_{u_j}: the contribution to Λ_{u_j}
    weight_gradients: tuple[sp.MatrixExpr, ...]  # ∂term/∂W_j = −G_v X_{u_j}ᵀ
    bias_gradient: sp.MatrixExpr | None  # ∂term/∂b = −G_v 1

    @property
    def m(self) -> int:
        return len(self.inputs)


def _symbols(m: int, same_width: bool) -> tuple[tuple[MatrixSymbol, ...], tuple[sp.Symbol, ...]]:
    """X_{u_j} with their widths n_{u_j} (all n_v for an add)."""
    widths = tuple(
        N_V if same_width else sp.Symbol(f"n_u{j}", integer=True, positive=True) for j in range(m)
    )
    inputs = tuple(MatrixSymbol(f"X_u{j}", n, BATCH) for j, n in enumerate(widths))
    return inputs, widths


def _check_m(kind: str, m: object) -> int:
    if kind not in KINDS:
        raise ValueError(f"node kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_INPUTS:
        raise ValueError(f"number of inputs must be an integer in 1..{MAX_INPUTS}, got {m!r}")
    if kind == "add" and m < 2:
        raise ValueError(f"an add node has at least two inputs, got {m}")
    return m


@cache
def derive_node(kind: str, m: int) -> NodeEquations:
    """Differentiate one node's constraint term (see the module docstring); cached per (kind, m).

    Raises ``ArithmeticError`` if a derivative does not come out in the expected shape.
    """
    m = _check_m(kind, m)
    X, Lam, G = (MatrixSymbol(s, N_V, BATCH) for s in ("X_v", "Λ_v", "G_v"))
    inputs, widths = _symbols(m, same_width=kind == "add")
    if kind == "add":
        return _derive_add(X, Lam, G, inputs, widths)
    weights = tuple(MatrixSymbol(f"W_{j}", N_V, n) for j, n in enumerate(widths))
    b = MatrixSymbol("b", N_V, 1)
    Z = sp.MatAdd(*[W * U for W, U in zip(weights, inputs)], b * OneMatrix(1, BATCH))
    term = Trace(Lam.T * (X - elementwise(SIGMA_K, Z)))
    forward = _forward(term, X, Lam)
    _check_own(term, X, Lam)
    H = find_hadamard(normalize(term.diff(b)), Lam)  # σ'(Z_v) ⊙ Λ_v

    def named(e: sp.Basic) -> sp.MatrixExpr:
        out = normalize(e).xreplace({H: G})
        if out.has(Lam):
            raise ArithmeticError(f"not a function of G_v alone: {out}")
        return out

    to_input = tuple(named(-term.diff(U)) for U in inputs)
    dW = tuple(named(term.diff(W)) for W in weights)
    return NodeEquations(
        "layer", X, Lam, G, inputs, weights, b, widths, term, Z, forward, H, to_input, dW,
        named(term.diff(b)),
    )  # fmt: skip


def _derive_add(
    X: MatrixSymbol,
    Lam: MatrixSymbol,
    G: MatrixSymbol,
    inputs: tuple[MatrixSymbol, ...],
    widths: tuple[sp.Symbol, ...],
) -> NodeEquations:
    """x_v = Σ_j x_{u_j}: forward, and −∂term/∂X_{u_j} = Λ_v."""
    term = Trace(Lam.T * (X - sp.MatAdd(*inputs)))
    forward = _forward(term, X, Lam)
    _check_own(term, X, Lam)
    to_input = tuple(normalize(-term.diff(U)) for U in inputs)
    return NodeEquations(
        "add", X, Lam, G, inputs, (), None, widths, term, None, forward, None, to_input, (), None
    )


def _forward(term: sp.Expr, X: MatrixSymbol, Lam: MatrixSymbol) -> sp.MatrixExpr:
    """f_v, solved from ∂term/∂Λ_v = X_v − f_v = 0."""
    return solve_identity(normalize(term.diff(Lam)), X)


def _check_own(term: sp.Expr, X: MatrixSymbol, Lam: MatrixSymbol) -> None:
    """∂term/∂X_v must be Λ_v: then ∂L/∂X_u = 0 solves for Λ_u as a sum of contributions."""
    own = normalize(term.diff(X))
    if own != Lam:
        raise ArithmeticError(f"∂term/∂X_v is {own}, not Λ_v")
