"""The derived graph equations, evaluated numerically (sympy.lambdify), against PyTorch autograd
in float64: gradients ∂J/∂θ and multipliers λ_v = −∂J/∂x_v, J the mean over a batch."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from graph_cases import shared, three_consumers, torch_autograd, two_skips

import lagrange_bp as lbp

torch = pytest.importorskip("torch")

BATCH = 3


SPECS = {
    "two-skips": two_skips,
    "three-consumers": three_consumers,
    "shared": lambda: shared("tanh"),
    **{
        f"rnn-T{t}-{at}": (lambda t=t, at=at: lbp.recurrent(2, 3, 2, t, outputs_at=at))
        for t in (1, 3, 12)
        for at in ("last", "every")
    },
}


def data(spec: lbp.GraphSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(BATCH, sum(spec.input_widths)))
    n_y = sum(spec.output_widths)
    if spec.loss != "cross_entropy":
        return X, rng.normal(size=(BATCH, n_y))
    Y = np.zeros((BATCH, n_y))
    Y[np.arange(BATCH), rng.integers(0, n_y, BATCH)] = 1.0
    return X, Y


def compiled(d: lbp.GraphDerivation) -> list[tuple[sp.Symbol, list[sp.Symbol], object]]:
    """Every derived equation lambdified once, in solving order: forward, adjoint, gradient
    (a gradient's left side is its parameter θ, standing for ∂L/∂θ)."""
    eqs = [(eq.lhs, eq.rhs) for eq in d.forward + d.adjoint] + list(d.gradients.items())
    out = []
    for lhs, rhs in eqs:
        args = sorted(rhs.free_symbols, key=str)
        out.append((lhs, args, sp.lambdify(args, rhs, "numpy")))
    return out


def derived(d: lbp.GraphDerivation, fns: list, params: dict, x: np.ndarray, y: np.ndarray) -> tuple:
    """One sample: the derived equations evaluated in order; (states and multipliers, ∂L/∂θ)."""
    env: dict[sp.Symbol, float] = dict(zip(d.input, x)) | dict(zip(d.target, y))
    for name, value in params.items():
        env |= dict(zip(d.params[name], np.ravel(value)))
    grads = {}
    for lhs, args, fn in fns:
        value = float(fn(*[env[a] for a in args]))
        if lhs in d.gradients:
            grads[lhs] = value
        else:
            env[lhs] = value
    return env, grads


@pytest.mark.parametrize("name", list(SPECS))
def test_derived_equations_match_torch_autograd(name: str) -> None:
    spec = SPECS[name]()
    d = lbp.derive(spec)
    rng = np.random.default_rng(16)
    params = {k: rng.normal(scale=0.8, size=s) for k, s in spec.param_shapes().items()}
    X, Y = data(spec, rng)
    fns = compiled(d)
    samples = [derived(d, fns, params, X[i], Y[i]) for i in range(BATCH)]
    _, grads, dJdx, _ = torch_autograd(spec, params, X, Y)
    for k in params:  # J is the mean: ∂J/∂θ = (1/B) Σ_i ∂L_i/∂θ
        ours = np.mean([[g[p] for p in d.params[k]] for _, g in samples], axis=0)
        np.testing.assert_allclose(ours, grads[k].ravel(), rtol=1e-10, atol=1e-13, err_msg=k)
    for v, lam in d.symbols.lam.items():  # λ_v = −∂J/∂x_v, each sample's λ carrying 1/B
        ours = np.array([[env[s] for s in lam] for env, _ in samples]) / BATCH
        np.testing.assert_allclose(ours, -dJdx[v], rtol=1e-10, atol=1e-13, err_msg=v)
