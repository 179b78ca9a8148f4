"""derive(): the KKT equations of L, checked against CONVENTIONS §1 and numerically (issue 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from conftest import SMALL_SPECS, SPEC_IDS

import lagrange_bp as lbp
from lagrange_bp.primitives import relu, sigmoid, softmax, softplus, step

NUMERIC = {
    "sigmoid": lambda u: 1 / (1 + math.exp(-u)),
    "relu": lambda u: max(0.0, u),
    "step": lambda u: 1.0 if u > 0 else 0.0,
    "softplus": lambda u: math.log1p(math.exp(u)),
    "softmax": lambda i, *z: math.exp(z[int(i) - 1]) / sum(math.exp(v) for v in z),
}


def numeric_forward(spec: lbp.NetworkSpec, params: list, x0: np.ndarray) -> np.ndarray:
    """Hand-written forward pass in NumPy (no SymPy), for finite differences."""
    x = x0
    for (W, b), act in zip(params, spec.activations):
        z = W @ x + b
        if act == "softmax":
            x = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        else:
            x = {
                "identity": lambda v: v,
                "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                "tanh": np.tanh,
                "relu": lambda v: np.maximum(v, 0),
                "softplus": lambda v: np.log1p(np.exp(v)),
            }[act](z)
    return x


def numeric_loss(spec: lbp.NetworkSpec, params: list, x0: np.ndarray, y: np.ndarray) -> float:
    out = numeric_forward(spec, params, x0)
    if spec.loss == "mse":
        return float(0.5 * np.sum((y - out) ** 2))
    return float(-np.sum(y * np.log(out)))


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=SPEC_IDS)
def test_structure_follows_design_section_3(spec: lbp.NetworkSpec) -> None:
    d = lbp.derive(spec)
    assert [(W.shape, b.shape) for W, b in d.params] == [
        ((m, n), (m, 1)) for n, m in zip(spec.widths[:-1], spec.widths[1:])
    ]
    assert d.input.shape == (spec.widths[0], 1)
    assert d.target.shape == (spec.widths[-1], 1)
    assert [eq.lhs for eq in d.forward] == [s for k in d.symbols.x if k for s in d.symbols.x[k]]
    assert [eq.lhs for eq in d.adjoint] == [
        s for k in range(spec.depth, 0, -1) for s in d.symbols.lam[k]
    ]
    assert list(d.gradients) == d.param_symbols()
    assert len(d.gradients) == spec.n_params
    # forward rhs only in earlier states; adjoint rhs only in states and later multipliers
    for eq in d.forward:
        assert not eq.rhs.free_symbols & ({s for m in d.symbols.lam.values() for s in m} | {eq.lhs})
    for eq in d.adjoint:
        k = int(str(eq.lhs)[2:].split("[")[0])
        earlier = {s for m in range(1, k + 1) for s in d.symbols.lam[m]}
        assert not eq.rhs.free_symbols & earlier
    assert isinstance(d.lagrangian, sp.Expr)


def test_output_adjoint_mse_and_cross_entropy() -> None:
    """λ^N = −∇_x ℓ: y − x^N for mse, y / x^N for cross-entropy (CONVENTIONS §1, B = 1)."""
    d = lbp.derive(lbp.NetworkSpec((2, 3, 2), "tanh", "mse"))
    x, y, lam = d.symbols.x[2], d.target, d.symbols.lam[2]
    assert [(eq.lhs, eq.rhs) for eq in d.adjoint[:2]] == [(lam[i], y[i] - x[i]) for i in range(2)]
    d = lbp.derive(lbp.NetworkSpec((2, 3, 2), ("tanh", "softmax"), "cross_entropy"))
    x, y, lam = d.symbols.x[2], d.target, d.symbols.lam[2]
    assert [(eq.lhs, eq.rhs) for eq in d.adjoint[:2]] == [(lam[i], y[i] / x[i]) for i in range(2)]


@pytest.mark.parametrize("name", ["identity", "sigmoid", "tanh", "relu", "softplus"])
def test_elementwise_equations_match_design_section_2(name: str) -> None:
    """CONVENTIONS §1: λ^k = W^{k+1ᵀ}(σ'(z^{k+1}) ⊙ λ^{k+1}), ∂L/∂W^k = −(σ'(z^k) ⊙ λ^k) x^{k-1ᵀ},
    ∂L/∂b^k = −σ'(z^k) ⊙ λ^k."""
    spec = lbp.NetworkSpec((2, 3, 2), name, "mse")
    d = lbp.derive(spec)
    s = d.symbols
    u = sp.Symbol("u")
    fn = {
        "identity": lambda v: v,
        "sigmoid": sigmoid,
        "tanh": sp.tanh,
        "relu": relu,
        "softplus": softplus,
    }[name]
    dsig = sp.Lambda(u, sp.diff(fn(u), u))
    z = {k: list(s.W[k] * s.x[k - 1] + s.b[k]) for k in (1, 2)}

    def same(derived: sp.Expr, expected: sp.Expr, k: int) -> bool:
        """Equal at the KKT point: adjoints and gradients are written in the states x^k."""
        at_kkt = {s.x[k][i]: fn(z[k][i]) for i in range(len(s.x[k]))}
        return sp.expand(derived.xreplace(at_kkt) - expected) == 0

    adjoint = {eq.lhs: eq.rhs for eq in d.adjoint}
    for j in range(3):
        expected = sum(s.W[2][i, j] * dsig(z[2][i]) * s.lam[2][i] for i in range(2))
        assert same(adjoint[s.lam[1][j]], expected, 2)
    for k in (1, 2):
        for i in range(s.W[k].rows):
            for j in range(s.W[k].cols):
                expected = -dsig(z[k][i]) * s.lam[k][i] * s.x[k - 1][j]
                assert same(d.gradients[s.W[k][i, j]], expected, k)
            assert same(d.gradients[s.b[k][i]], -dsig(z[k][i]) * s.lam[k][i], k)


def test_relu_derivative_convention_at_zero() -> None:
    """relu'(0) := 0, documented in functions.relu."""
    z = sp.Symbol("z")
    assert sp.diff(relu(z), z) == step(z)
    assert step(0) == 0 and step(sp.Rational(1, 3)) == 1 and step(-2) == 0


def test_softmax_jacobian_rule() -> None:
    z = sp.symbols("z1:4")
    s = [softmax(sp.Integer(i), *z) for i in (1, 2, 3)]
    assert sp.diff(s[0], z[0]) == s[0] * (1 - s[0])
    assert sp.diff(s[0], z[2]) == -s[0] * s[2]


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=SPEC_IDS)
def test_derived_gradient_matches_finite_differences(spec: lbp.NetworkSpec) -> None:
    """Evaluate forward, adjoint, gradient in floats; compare with central differences of J."""
    d = lbp.derive(spec)
    rng = np.random.default_rng(0)
    params = [(rng.normal(size=W.shape), rng.normal(size=b.shape[0])) for W, b in d.params]
    x0 = rng.normal(size=spec.widths[0])
    y = (
        np.eye(spec.widths[-1])[1 % spec.widths[-1]]
        if spec.loss == "cross_entropy"
        else rng.normal(size=spec.widths[-1])
    )
    env: dict[sp.Symbol, float] = dict(zip(d.input, x0)) | dict(zip(d.target, y))
    for (Ws, bs), (W, b) in zip(d.params, params):
        env |= dict(zip(Ws, W.ravel())) | dict(zip(bs, b))
    modules = [NUMERIC, "math"]
    for eq in d.forward + d.adjoint:
        env[eq.lhs] = sp.lambdify(list(env), eq.rhs, modules)(*env.values())
    h = 1e-6
    for p, grad in d.gradients.items():
        got = sp.lambdify(list(env), grad, modules)(*env.values())
        k, Ws, bs = next(
            (k, list(W), list(b)) for k, (W, b) in enumerate(d.params) if p in list(W) + list(b)
        )
        arr, idx = (params[k][0], Ws.index(p)) if p in Ws else (params[k][1], bs.index(p))
        flat = arr.reshape(-1)
        old = flat[idx]
        flat[idx] = old + h
        up = numeric_loss(spec, params, x0, y)
        flat[idx] = old - h
        down = numeric_loss(spec, params, x0, y)
        flat[idx] = old
        assert got == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-7), str(p)


@pytest.mark.parametrize(
    "spec",
    [
        lbp.NetworkSpec((3, 4, 2), ("tanh", "softmax"), "cross_entropy", weight_decay=0.1),
        lbp.NetworkSpec((2, 3, 2, 2), ("relu", "z*tanh(z)", "identity"), "log(cosh(x - y))"),
    ],
    ids=["softmax-decay", "custom"],
)
def test_the_mlp_is_derived_as_its_chain_graph(spec: lbp.NetworkSpec) -> None:
    """One engine (kkt.solve): derive(spec) equals derive(chain_graph(spec)) with the graph's
    symbols renamed to the MLP's (layer<k> → x^k, λ^k, W^k, b^k), equation for equation."""
    from lagrange_bp.graph import chain_graph
    from lagrange_bp.lagrangian import chain_symbols, graph_symbols, make_symbols

    graph = chain_graph(spec)
    assert [n.name for n in graph.nodes] == ["x0"] + [f"layer{k}" for k in range(1, spec.depth + 1)]
    mine, theirs = chain_symbols(graph, make_symbols(spec.widths)), graph_symbols(graph)
    rename = {}
    for field in ("states", "lam", "z", "params"):
        for key, m in getattr(theirs, field).items():
            rename |= dict(zip(m, getattr(mine, field)[key]))
    rename |= dict(zip(theirs.y, mine.y))
    d, g = lbp.derive(spec), lbp.derive(graph)
    assert graph.weight_decay == spec.weight_decay
    assert [e.xreplace(rename) for e in g.forward] == d.forward
    assert [e.xreplace(rename) for e in g.adjoint] == d.adjoint
    assert {rename[p]: e.xreplace(rename) for p, e in g.gradients.items()} == d.gradients
    assert g.lagrangian.xreplace(rename) == d.lagrangian
