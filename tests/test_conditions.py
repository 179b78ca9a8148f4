"""The homework's statements (issue 12 item 1): each stationarity condition shown as the
derivative SymPy computes, = 0, then solved; the problem with ℓ defined; the batch bridge."""

from __future__ import annotations

import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp.conditions import Condition, Typeset, batch_bridge
from lagrange_bp.generic import LAYER, N_K
from lagrange_bp.matrices import BATCH

G = lbp.derive_general()


def _explicit(e: sp.Basic) -> sp.Matrix:
    return sp.simplify(e.subs({N_K: 2, BATCH: 3}).as_explicit())


@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "log(cosh(x - y))"])
def test_the_output_condition_is_solved_by_its_solution(loss: str) -> None:
    """∂L/∂X^N with Λ^N replaced by the solved form is the zero matrix (at 2 × 3, entry by
    entry), and with the sign of the solution flipped it is not: the display is the solution
    of the equation it shows."""
    c = G.conditions(loss)[1]
    assert c.variable == "X^N" and c.solved is not None
    lhs, rhs = c.solved
    assert lhs == LAYER.Lam
    assert _explicit(c.derivative.xreplace({LAYER.Lam: rhs})).is_zero_matrix
    assert not _explicit(c.derivative.xreplace({LAYER.Lam: -rhs})).is_zero_matrix


def test_conditions_read_as_equations_then_solutions() -> None:
    texts = [str(c) for c in G.conditions("mse")]
    assert texts[0].startswith("∂L/∂Λ^k = X^k - σ_k(Z^k) = 0  ⇒  X^k = σ_k(Z^k)")
    assert texts[1].startswith("∂L/∂X^N = (1/B) (X^N - Y) + Λ^N = 0  ⇒  Λ^N = (1/B) (Y - X^N)")
    assert texts[2].startswith(
        "∂L/∂X^k = Λ^k - W^{k+1}ᵀ (σ'_{k+1}(Z^{k+1}) ⊙ Λ^{k+1}) = 0  ⇒  Λ^k = W^{k+1}ᵀ G^{k+1}"
    )
    assert texts[3].startswith("∂L/∂W^k = -(σ'_k(Z^k) ⊙ Λ^k) X^{k-1}ᵀ = -G^k X^{k-1}ᵀ")
    assert texts[4].startswith("∂L/∂b^k = -(σ'_k(Z^k) ⊙ Λ^k) 1 = -G^k 1")
    abstract = str(G.conditions()[1])
    assert "(1/B) ∂ℓ/∂x(X^N, Y) + Λ^N = 0  ⇒  Λ^N = -(1/B) ∂ℓ/∂x(X^N, Y)" in abstract
    latex = G.conditions("cross_entropy")[1]._repr_latex_()
    assert latex.startswith("$$") and r"\left(Y \oslash X^{(N)}\right)" in latex


def test_every_condition_is_a_displayable_object() -> None:
    for c in G.conditions():
        assert isinstance(c, Condition)
        tex = c._repr_latex_()
        assert tex.startswith("$$\n") and tex.endswith("\n$$") and "\\partial" in tex
    for shown in (G.problem("mse"), G.lagrangian(), G.activations(), G.algorithm()):
        assert isinstance(shown, Typeset) and shown.text and shown._repr_latex_().count("$$") == 2


def test_the_problem_defines_the_loss_and_escapes_user_text() -> None:
    mse = G.problem("mse")
    assert r"\ell(y, x) = \sum_{j=1}^{n_{N}} \frac{\left(x_{j} - y_{j}\right)^{2}}{2}" in mse.latex
    assert "ℓ(y, x) = Σ_j (x_j - y_j)**2/2" in mse.text
    custom = G.problem("log(cosh(x - y))")
    assert r"\log{\left(\cosh{\left(x_{j} - y_{j} \right)} \right)}" in custom.latex
    name = lbp.derive_general().problem("abs(x - y)").latex.split(r"\qquad")[-1]
    assert "\\text{" in name, "the loss's name is text, escaped for LaTeX"


def test_the_batch_bridge_is_an_identity() -> None:
    eq, holds = batch_bridge(2, 3)
    assert holds and isinstance(eq, sp.Eq)
    assert len(sp.Add.make_args(eq.rhs)) == 6
