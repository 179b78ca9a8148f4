"""Step 4b: the generic layer — any depth and widths, in matrix-batch form (CONVENTIONS §3).

Vocabulary: the *generic layer* is layer k with symbolic widths n_{k-1}, n_k, n_{k+1} and batch
size B; the *general proof* (``verify_general``) shows by induction over k that its equations
are backpropagation for every N. States are columns: X^k is n_k × B (one column per sample),
Λ^k likewise, 1 = OneMatrix(1, B), Z^k = W^k X^{k-1} + b^k 1ᵀ. The layer's equations are the
layer node kind's (``graph_generic.derive_node``: SymPy's matrix calculus on one constraint
term Tr(Λ_vᵀ(X_v − σ(Z_v))), the derivation graphs use), renamed to layers k and k+1 of the
chain; the window of the batch Lagrangian they add up to is (the Trace form of CONVENTIONS §4)

  interior:  L_k = Tr(Λ^kᵀ(X^k − σ_k(Z^k)) + Λ^{k+1ᵀ}(X^{k+1} − σ_{k+1}(Z^{k+1})))
  output:    L_N = Σ_ij ℓ(X^N_ij, Y_ij)/B + Σ_ij Λ^N_ij (X^N_ij − σ_N(Z^N)_ij)   (index form)

with σ and ℓ undefined functions. The layer's vector–Jacobian product G^k := J_{σ_k}(Z^k)ᵀ Λ^k
(= σ'_k(Z^k) ⊙ Λ^k for elementwise σ) is named once, so that
  forward:  X^k = σ_k(Z^k)          adjoint:  Λ^{k-1} = W^{kᵀ} G^k,  Λ^N = −(1/B) ∂ℓ/∂x (X^N, Y)
  gradient: ∂L/∂W^k = −G^k X^{k-1ᵀ}, ∂L/∂b^k = −G^k 1
A concrete activation or loss enters through its record (``functions``): ``act.vjp`` and
``loss.output_adjoint``. Softmax's G^k is derived in index form (symbolic n) and lifted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

import sympy as sp
from sympy import HadamardProduct, Lambda, MatMul, MatrixSymbol, OneMatrix, Trace

from .functions import Activation, Loss
from .lagrangian import ALPHA
from .matrices import ARG_U, ARG_V, BATCH, entrywise

if TYPE_CHECKING:
    from .conditions import Condition, Typeset

N_PREV, N_K, N_NEXT = sp.symbols("n_{k-1} n_k n_{k+1}", integer=True, positive=True)


class GenericLayer:
    """Matrix symbols of layers k-1, k, k+1 with symbolic widths and batch size B."""

    X_prev = MatrixSymbol("X^{k-1}", N_PREV, BATCH)
    X = MatrixSymbol("X^k", N_K, BATCH)
    X_next = MatrixSymbol("X^{k+1}", N_NEXT, BATCH)
    Lam = MatrixSymbol("Λ^k", N_K, BATCH)
    Lam_next = MatrixSymbol("Λ^{k+1}", N_NEXT, BATCH)
    W = MatrixSymbol("W^k", N_K, N_PREV)
    b = MatrixSymbol("b^k", N_K, 1)
    W_next = MatrixSymbol("W^{k+1}", N_NEXT, N_K)
    b_next = MatrixSymbol("b^{k+1}", N_NEXT, 1)
    G = MatrixSymbol("G^k", N_K, BATCH)
    G_next = MatrixSymbol("G^{k+1}", N_NEXT, BATCH)
    Y = MatrixSymbol("Y", N_K, BATCH)  # targets, when k = N

    @property
    def Z(self) -> sp.MatrixExpr:
        return self.W * self.X_prev + self.b * OneMatrix(1, BATCH)

    @property
    def Z_next(self) -> sp.MatrixExpr:
        return self.W_next * self.X + self.b_next * OneMatrix(1, BATCH)


LAYER = GenericLayer()
SIGMA_K, SIGMA_NEXT = sp.Function("σ_k"), sp.Function("σ_{k+1}")
LOSS_FN = sp.Function("ℓ")  # an undefined per-entry loss ℓ(x, y)
SAMPLES_AXIS = 0  # in the generic layer a sample is a column: its entries run along axis 0


def normalize(e: sp.Basic) -> sp.Basic:
    """Canonical form for comparing matrix expressions.

    Renames every Lambda's variables to u, v (each diff makes fresh dummies) and pulls scalar
    factors out of Hadamard products, so that equal expressions compare equal.
    """
    if not isinstance(e, sp.Basic) or not e.args:
        return e
    args = [normalize(a) for a in e.args]
    if isinstance(e, Lambda):
        variables, body = e.variables, args[1]
        canonical = (ARG_U, ARG_V)[: len(variables)]
        body = body.xreplace(dict(zip(variables, canonical)))
        if body.has(sp.Derivative):  # u is real: d|u|/du = sign(u); σ' of an abstract σ stays
            body = body.doit()
        return Lambda(canonical, body)
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
class GenericDerivation:
    """The generic-layer equations, with σ and ℓ abstract."""

    interior_lagrangian: sp.Expr
    decay: sp.Expr  # (α/2) Tr(W^kᵀ W^k) with weight decay, else 0
    forward: sp.Eq  # X^k = σ_k(Z^k)
    adjoint: sp.Eq  # Λ^k = W^{k+1ᵀ} G^{k+1}
    weight_gradient: sp.Eq  # ∂L/∂W^k = −G^k X^{k-1ᵀ} (+ α W^k with weight decay)
    bias_gradient: sp.Eq  # ∂L/∂b^k = −G^k 1
    vjp: sp.Eq  # G^k = σ'_k(Z^k) ⊙ Λ^k, σ abstract and elementwise
    output_adjoint: sp.Eq  # Λ^N = −(1/B) ∂ℓ/∂x (X^N, Y), ℓ abstract
    raw: dict[str, sp.Expr] = field(default_factory=dict)  # with G^k written out again
    output_index: dict[str, sp.Expr] = field(default_factory=dict)
    softmax_index: dict[str, sp.Expr] = field(default_factory=dict)
    #: ∂L/∂v before it is set to 0 and solved: v = Λ^k, X^k (k < N; the node's own Λ^k minus
    #: its consumer's share, both from ``derive_node``), X^N (index form)
    stationarity: dict[str, sp.Basic] = field(default_factory=dict)

    def __repr__(self) -> str:
        from .display import general_repr

        return general_repr(self)

    def _repr_markdown_(self) -> str:
        from .display import general_markdown

        return general_markdown(self)

    def _repr_latex_(self) -> str:
        from .display import general_latex

        return general_latex(self)

    def problem(self, loss: str | Loss = "mse") -> Typeset:
        """The batch training problem with ℓ defined (``conditions.problem``)."""
        from .conditions import problem

        return problem(loss)

    def lagrangian(self) -> Typeset:
        """L per sample and in batch form (``conditions.lagrangian``)."""
        from .conditions import lagrangian

        return lagrangian()

    def conditions(self, loss: str | Loss | None = None) -> list[Condition]:
        """Each stationarity condition as an equation = 0, then solved (``conditions``)."""
        from .conditions import conditions

        return conditions(self, loss)

    def activations(self) -> Typeset:
        """G^k = Dσ(Z^k)ᵀ Λ^k for each built-in activation (``conditions.activations``)."""
        from .conditions import activations

        return activations(self)

    def algorithm(self) -> Typeset:
        """The backpropagation algorithm the conditions give (``conditions.algorithm``)."""
        from .conditions import algorithm

        return algorithm()


@cache
def derive_generic(weight_decay: bool = False) -> GenericDerivation:
    """The generic layer's equations from the layer node kind (``graph_generic.derive_node``,
    the one derivation of a layer that graphs use too), renamed to layer k and layer k+1.

    In a chain, X^k has one consumer, layer k+1: ∂L/∂X^k = ∂term_k/∂X^k + ∂term_{k+1}/∂X^k
    = Λ^k − W^{k+1ᵀ} G^{k+1} (the node's own multiplier, checked by ``derive_node``, plus its
    consumer's share), so Λ^k = W^{k+1ᵀ} G^{k+1}. ``weight_decay=True`` adds the objective's
    (α/2) Tr(W^kᵀ W^k) = (α/2) ‖W^k‖², differentiated on its own (SymPy's derivative of a sum
    of traces can be silently 0).
    """
    if not isinstance(weight_decay, bool):
        raise TypeError(f"weight_decay must be True or False, got {weight_decay!r}")
    from .graph_generic import derive_node  # graph_generic builds on this module's helpers

    s, node = LAYER, derive_node("layer", 1)
    (U,), (W,) = node.inputs, node.weights
    at_k = {node.X: s.X, node.Lam: s.Lam, node.G: s.G, U: s.X_prev, W: s.W, node.bias: s.b}
    at_next = {
        node.X: s.X_next, node.Lam: s.Lam_next, node.G: s.G_next, U: s.X, W: s.W_next,
        node.bias: s.b_next,
    }  # fmt: skip

    def k(e: sp.Basic) -> sp.Basic:
        return e.xreplace(at_k)

    def k_next(e: sp.Basic) -> sp.Basic:
        return e.xreplace(at_next).replace(SIGMA_K, SIGMA_NEXT)

    if node.vjp is None or node.bias_gradient is None:
        raise ArithmeticError("the layer node kind has no G or no ∂L/∂b")
    L = Trace(k(node.term).arg + k_next(node.term).arg)
    penalty = ALPHA / 2 * Trace(s.W.T * s.W) if weight_decay else sp.S.Zero
    H, H_next = k(node.vjp), k_next(node.vjp)
    adjoint = k_next(node.to_input[0])
    dW, db = k(node.weight_gradients[0]), k(node.bias_gradient)
    if weight_decay:
        dW = normalize(dW + penalty.diff(s.W))
    raw = {
        "adjoint": adjoint.xreplace({s.G_next: H_next}),
        "weight_gradient": dW.xreplace({s.G: H}),
        "bias_gradient": db.xreplace({s.G: H}),
    }
    index = output_index_form()
    lam_n = entrywise(index["lambda_lifted"], s.X, s.Y)
    forward = k(node.forward)
    return GenericDerivation(
        interior_lagrangian=L,
        decay=penalty,
        forward=sp.Eq(s.X, forward, evaluate=False),
        adjoint=sp.Eq(s.Lam, adjoint, evaluate=False),
        weight_gradient=sp.Eq(sp.Symbol("∂L/∂W^k"), dW, evaluate=False),
        bias_gradient=sp.Eq(sp.Symbol("∂L/∂b^k"), db, evaluate=False),
        vjp=sp.Eq(s.G, H, evaluate=False),
        output_adjoint=sp.Eq(s.Lam, lam_n, evaluate=False),
        raw=raw,
        output_index=index,
        softmax_index=softmax_index_form(),
        stationarity={
            "Λ^k": normalize(s.X - forward),  # ∂term_k/∂Λ^k = X^k − σ_k(Z^k)
            "X^k": normalize(s.Lam - raw["adjoint"]),  # own Λ^k, minus the consumer's share
            "X^N": _output_condition(index["condition"]),
        },
    )


def _output_condition(condition: sp.Expr) -> sp.MatrixExpr:
    """∂L/∂X^N_pq = Λ^N_pq + (1/B) ∂ℓ/∂x (X_pq, Y_pq), derived in index form, as the matrix
    Λ^N + (1/B) ∂ℓ/∂x (X^N, Y) (entrywise); raises if the multiplier's coefficient is not 1."""
    _, _, _, p, q = _indices()
    X, Y, Lam = (sp.IndexedBase(name) for name in ("X", "Y", "Λ"))
    rest = sp.expand(condition - Lam[p, q])
    if rest.has(Lam[p, q]):
        raise ArithmeticError(f"∂L/∂X^N is not Λ^N plus a term of X^N and Y: {condition}")
    body = rest.subs({X[p, q]: ARG_U, Y[p, q]: ARG_V}).doit()
    return LAYER.Lam + entrywise(body, LAYER.X, LAYER.Y)


def _indices() -> tuple[sp.Symbol, ...]:
    return sp.symbols("i j m p q", integer=True)


def collapse_range(e: sp.Expr) -> sp.Expr:
    """Take the branch of SymPy's range Piecewise that holds for indices inside their ranges
    (every condition here is a bound 1 ≤ index ≤ size)."""

    def pick(pw: sp.Piecewise) -> sp.Expr:
        for expr, cond in pw.args:
            if cond is not sp.true and all(
                isinstance(c, (sp.Ge, sp.Le, sp.Gt, sp.Lt)) for c in sp.And.make_args(cond)
            ):
                return collapse_range(expr)
        raise ArithmeticError(f"no in-range branch in {pw}")

    return e.replace(lambda x: isinstance(x, sp.Piecewise), pick)


@cache
def output_index_form() -> dict[str, sp.Expr]:
    """∂L_N/∂X^N_pq = 0 in index form with ℓ abstract: Λ^N_pq = −(1/B) ∂ℓ/∂x (X_pq, Y_pq).

    L_N = Σ_i Σ_j ℓ(X_ij, Y_ij)/B + Λ_ij (X_ij − S_ij), S = σ_N(Z^N) (free of X^N), summed over
    i = 1..n, j = 1..B; SymPy differentiates the double sum and its KroneckerDeltas collapse.
    """
    i, j, _, p, q = _indices()
    n = sp.Symbol("n", integer=True, positive=True)
    X, Y, Lam, Sg = (sp.IndexedBase(name) for name in ("X", "Y", "Λ", "S"))
    L = sp.Sum(
        LOSS_FN(X[i, j], Y[i, j]) / BATCH + Lam[i, j] * (X[i, j] - Sg[i, j]),
        (i, 1, n),
        (j, 1, BATCH),
    )
    condition = collapse_range(sp.diff(L, X[p, q]).doit())
    lam = sp.solve(condition, Lam[p, q])
    if len(lam) != 1:
        raise ArithmeticError(f"∂L/∂X^N = 0 does not determine Λ^N uniquely: {condition}")
    J = sp.Sum(LOSS_FN(X[i, j], Y[i, j]) / BATCH, (i, 1, n), (j, 1, BATCH))
    dJ = collapse_range(sp.diff(J, X[p, q]).doit())
    at = {X[p, q]: ARG_U, Y[p, q]: ARG_V}
    lifted = lam[0].subs(at).doit()
    return {"condition": condition, "lambda": lam[0], "dJ": dJ, "lambda_lifted": lifted}


def for_loss(expr: sp.Basic, loss: Loss) -> sp.Basic:
    """``expr`` with the abstract per-entry loss ℓ(x, y) replaced by the loss's term."""
    from .functions import X_VAR, Y_VAR

    term = Lambda((X_VAR, Y_VAR), loss.term)
    return expr.replace(LOSS_FN, term).replace(
        lambda e: isinstance(e, Lambda), lambda e: Lambda(e.variables, e.expr.doit())
    )


@cache
def softmax_index_form() -> dict[str, sp.Expr]:
    """Softmax's G_j = Σ_i λ_i ∂S_i/∂z_j in index form, and with λ_i = y_i/(B S_i) (−Σ y log x).

    Derived by SymPy from S_i = e^{z_i} / Σ_m e^{z_m} with symbolic n; the range Piecewise is
    collapsed (j is an index in 1..n) and e^{z_i} written as S_i Σ_m e^{z_m}. The fused term
    substitutes the cross-entropy output adjoint and simplifies under Σ_i y_i = 1.
    """
    i, j, m, _, _ = _indices()
    n = sp.Symbol("n", integer=True, positive=True)
    z, lam, y, Sx = (sp.IndexedBase(name) for name in ("z", "λ", "y", "S"))
    D = sp.Symbol("D", positive=True)
    total = sp.Sum(sp.exp(z[m]), (m, 1, n))
    g = sp.diff(sp.Sum(lam[i] * sp.exp(z[i]) / total, (i, 1, n)), z[j]).doit()
    g = collapse_range(g)
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
    fused = g.xreplace({lam[j]: y[j] / (BATCH * Sx[j])})
    fused = fused.replace(
        lambda e: isinstance(e, sp.Sum),
        lambda e: sp.Sum(e.function.xreplace({lam[i]: y[i] / (BATCH * Sx[i])}), *e.limits),
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


def vjp_for(act: Activation) -> sp.MatrixExpr:
    """G^k = Dσ(Z^k)ᵀ Λ^k for the layer's activation record (samples are columns)."""
    return act.vjp(LAYER.Z, LAYER.X, LAYER.Lam, SAMPLES_AXIS)


def output_adjoint_for(loss: Loss) -> sp.MatrixExpr:
    """Λ^N = −(1/B) ∂ℓ/∂x (X^N, Y) for the loss record (samples are columns)."""
    return loss.output_adjoint(LAYER.X, LAYER.Y)


def output_vjp_for(act: Activation, loss: Loss) -> sp.MatrixExpr:
    """G^N = Dσ(Z^N)ᵀ Λ^N with Λ^N substituted and simplified, as the kernels compute it
    ((Y − X^N)/B for softmax with cross-entropy; samples are columns)."""
    return act.kernel_output_vjp(loss, LAYER.Z, LAYER.X, LAYER.Y, SAMPLES_AXIS)
