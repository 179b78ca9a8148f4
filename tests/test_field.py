"""field: exact GF(p) evaluation and forward-mode duals agree with SymPy's own diff."""

from __future__ import annotations

import random

import pytest
import sympy as sp

from lagrange_bp.field import CONST, FRESH, Deg, Degenerate, Evaluator, Oracle, P, inverse, number
from lagrange_bp.field import seed_value as seed


def test_rationals_and_inverse() -> None:
    assert number(sp.Rational(1, 2)) * 2 % P == 1
    assert number(sp.Integer(-3)) == P - 3
    assert inverse(7) * 7 % P == 1
    with pytest.raises(Degenerate):
        inverse(P)


def test_oracle_is_a_function_of_name_and_argument_values() -> None:
    o = Oracle(5)
    assert o("tanh", (3,)) == o("tanh", (3,)) != o("tanh", (4,))
    assert o("tanh", (3,)) != o("sigmoid", (3,)) and o("tanh", (3,)) != Oracle(6)("tanh", (3,))
    assert len(o.keys) == 3


def test_degree_bounds() -> None:
    assert FRESH + FRESH == Deg(1, 0) and FRESH * FRESH == Deg(2, 0)
    assert FRESH.pow(-2) == Deg(0, 2) and (FRESH.pow(-1) + CONST) == Deg(1, 1)
    x, y = sp.symbols("x y")
    ev = Evaluator({x: seed(3), y: seed(5)}, Oracle(0))
    assert ev(x**2 * y + 1 / x).deg == Deg(4, 1)
    assert ev(sp.tanh(x * y)).deg == FRESH


def test_division_by_zero_at_the_point_is_degenerate() -> None:
    x = sp.Symbol("x")
    with pytest.raises(Degenerate):
        Evaluator({x: seed(0)}, Oracle(0))(1 / x)


def test_unsupported_expressions_are_refused() -> None:
    x = sp.Symbol("x")
    with pytest.raises(TypeError, match="cannot evaluate Float exactly"):
        Evaluator({x: seed(1)}, Oracle(0))(x + sp.Float(0.5))
    with pytest.raises(KeyError, match="no value for symbol x"):
        Evaluator({}, Oracle(0))(x + 1)


@pytest.mark.parametrize("seed_", range(5))
def test_dual_numbers_equal_sympy_diff(seed_: int) -> None:
    """The tangent of an expression is its SymPy derivative, evaluated with the same oracle."""
    rng = random.Random(seed_)
    x, y = sp.symbols("x y")
    expr = x**3 * sp.tanh(x * y + 1) - y / (x + 2) + sp.log(x * y) ** 2 + sp.exp(x - y)
    vals = {x: rng.randrange(P), y: rng.randrange(P)}
    oracle = Oracle(seed_)
    dual = Evaluator({x: seed(vals[x], 0, 2), y: seed(vals[y], 1, 2)}, oracle, dims=2)(expr)
    plain = Evaluator({s: seed(v) for s, v in vals.items()}, oracle)
    assert dual.v == plain(expr).v
    assert dual.t == [plain(sp.diff(expr, x)).v, plain(sp.diff(expr, y)).v]
