"""The derived equations are first-class SymPy (issue 12, item 4): every function the package
puts in an expression evaluates with ``sympy.N``, prints with stock ``sympy.lambdify`` for
"numpy", "math" and "mpmath", rewrites to elementary functions, and the symbols print as the
textbook's x^{(k)}_i. Each derived equation, evaluated those ways, equals the compiled model."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp.primitives import relu, sigmoid, softmax, softplus, step

SPECS = [
    lbp.NetworkSpec((2, 3, 3), ("sigmoid", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((3, 2, 2), ("relu", "softplus"), "mse"),
    lbp.NetworkSpec((2, 2, 1), ("z*tanh(softplus(z))", "sigmoid"), "log(cosh(x - y))"),
    lbp.NetworkSpec((2, 3, 2, 2), ("tanh", "softplus", "softmax"), "mse"),
]
IDS = ["sigmoid-softmax-ce", "relu-softplus", "custom", "three-layers-softmax"]


def _point(spec: lbp.NetworkSpec, d: lbp.Derivation) -> tuple[list, np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(3)
    params = [(rng.normal(size=W.shape), rng.normal(size=b.shape[0])) for W, b in d.params]
    x0 = rng.normal(size=spec.widths[0])
    y = (
        np.eye(spec.widths[-1])[0]
        if spec.loss == "cross_entropy"
        else rng.normal(size=spec.widths[-1])
    )
    env: dict[sp.Symbol, float] = dict(zip(d.input, x0)) | dict(zip(d.target, y))
    for (Ws, bs), (W, b) in zip(d.params, params):
        env |= dict(zip(Ws, W.ravel())) | dict(zip(bs, b))
    return params, x0[None, :], y[None, :], env


def _value(rhs: sp.Expr, values: dict[sp.Symbol, float], how: str) -> float:
    if how == "N":
        return float(sp.N(rhs.subs(values), 30))
    if how == "rewrite":
        elementary = rhs.rewrite(sp.exp)
        assert not elementary.atoms(sigmoid, softplus, relu, step, softmax), elementary
        return float(sp.N(elementary.subs(values), 30))
    args = sorted(rhs.free_symbols, key=str)
    return float(sp.lambdify(args, rhs, how)(*[values[a] for a in args]))


def _evaluate(
    d: lbp.Derivation, env: dict, how: str
) -> tuple[dict[sp.Symbol, float], dict[sp.Symbol, float]]:
    """x and λ, each equation evaluated on the values before it; then ∂L/∂θ."""
    values = dict(env)
    for e in d.forward + d.adjoint:
        values[e.lhs] = _value(e.rhs, values, how)
    return values, {p: _value(g, values, how) for p, g in d.gradients.items()}


@pytest.mark.parametrize("how", ["numpy", "math", "mpmath", "N", "rewrite"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_derived_equation_evaluates_as_the_model_computes(
    spec: lbp.NetworkSpec, how: str
) -> None:
    d = lbp.derive(spec)
    params, X, Y, env = _point(spec, d)
    values, gradients = _evaluate(d, env, how)
    model = lbp.compile(spec)
    n = spec.depth
    np.testing.assert_allclose(
        [values[s] for s in d.symbols.x[n]], model.forward(params, X)[0], rtol=1e-10, atol=1e-12
    )
    for k, lam in enumerate(model.adjoint(params, X, Y), start=1):
        np.testing.assert_allclose(
            [values[s] for s in d.symbols.lam[k]], lam[0], rtol=1e-9, atol=1e-12
        )
    _, grads = model.loss_and_grad(params, X, Y)
    flat = np.concatenate([np.concatenate([gW.ravel(), gb]) for gW, gb in grads])
    np.testing.assert_allclose(
        [gradients[p] for p in d.param_symbols()], flat, rtol=1e-9, atol=1e-12
    )


def test_stock_lambdify_with_math_survives_large_arguments() -> None:
    """softplus prints as log(1 + e^{−|u|}) + max(u, 0) and softmax shifted by its maximum."""
    u, v = sp.symbols("u v", real=True)
    assert sp.lambdify(u, softplus(u), "math")(800.0) == 800.0
    f = sp.lambdify((u, v), softmax(sp.Integer(1), u, v), "math")
    assert f(1000.0, 1000.0) == 0.5
    assert sp.lambdify(u, relu(u) + step(u), "math")(-2.0) == 0.0


def test_symbols_print_as_the_textbook_writes_them() -> None:
    d = lbp.derive(lbp.NetworkSpec((2, 2, 1), "tanh", "mse"))
    W, lam = d.symbols.W[2][0, 1], d.symbols.lam[2][0]
    assert sp.latex(W * lam) == r"W^{(2)}_{1,2} \lambda^{(2)}_{1}"
    assert sp.latex(d.symbols.x[0][1] + d.target[0]) == r"x^{(0)}_{2} + y_{1}"
