"""The hand-written reference (issue 9 items 2, 3): independent, exact for every built-in
(checked against PyTorch autograd), and right for custom strings and in the KKT diagnostics."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp import reference
from lagrange_bp.diagnostics import finite_difference_gradient, kkt_residuals
from lagrange_bp.functions import ACTIVATIONS

ELEMENTWISE = [a for a in ACTIVATIONS if a != "softmax"]
SPECS = [
    *[lbp.NetworkSpec((3, 4, 3), (a, "softmax"), "cross_entropy") for a in ELEMENTWISE],
    *[lbp.NetworkSpec((3, 4, 2), ("tanh", a), "mse") for a in ACTIVATIONS],
    lbp.NetworkSpec((3, 4, 4, 3), ("softmax", "sigmoid", "softmax"), "cross_entropy"),
]


def _torch():  # type: ignore[no-untyped-def]
    if os.environ.get("CI") == "true":
        import torch  # CI installs torch==2.13.0: never skip there

        return torch
    return pytest.importorskip("torch")


def _problem(spec: lbp.NetworkSpec, seed: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = [
        (rng.normal(scale=0.8, size=(m, n)), rng.normal(scale=0.5, size=m))
        for n, m in zip(spec.widths[:-1], spec.widths[1:])
    ]
    X = rng.normal(size=(7, spec.widths[0]))
    if spec.loss == "cross_entropy":
        Y = np.eye(spec.widths[-1])[rng.integers(0, spec.widths[-1], 7)]
    else:
        Y = rng.normal(size=(7, spec.widths[-1]))
    return params, X, Y


@pytest.mark.parametrize("spec", SPECS, ids=[s.describe() for s in SPECS])
def test_reference_equals_pytorch_for_every_builtin(spec: lbp.NetworkSpec) -> None:
    """Loss, ∇J and λ^k = −∂J/∂x^k of the reference against torch autograd, to 1e-12."""
    torch = _torch()
    F = torch.nn.functional
    forms = {
        "identity": lambda v: v,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "softplus": F.softplus,
        "softmax": lambda v: torch.softmax(v, dim=1),
    }
    params, X, Y = _problem(spec)
    J, grads, lams = reference.loss_and_grad(params, spec.activations, spec.loss, X, Y)
    tp = [
        (torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
        for W, b in params
    ]
    x, states = torch.tensor(X), []
    for (W, b), act in zip(tp, spec.activations):
        x = forms[act](x @ W.T + b)
        x.retain_grad()
        states.append(x)
    Yt = torch.tensor(Y)
    if spec.loss == "mse":
        Jt = 0.5 * ((x - Yt) ** 2).sum() / len(X)
    else:
        Jt = -(Yt * torch.log(x)).sum() / len(X)
    Jt.backward()
    assert J == pytest.approx(float(Jt.detach()), rel=1e-13)
    for (gW, gb), (W, b) in zip(grads, tp):
        np.testing.assert_allclose(gW, W.grad.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-12, atol=1e-15)
    for lam, state in zip(lams, states):
        np.testing.assert_allclose(lam, -state.grad.numpy(), rtol=1e-12, atol=1e-15)


CUSTOM = lbp.NetworkSpec((3, 4, 2), ("z*tanh(softplus(z))", "2*atan(z) + z"), "log(cosh(x - y))")


def test_reference_handles_custom_strings_on_its_own() -> None:
    """Dual numbers through the parsed definitions: the same gradient as central differences
    and as the generated kernels."""
    model = lbp.compile(CUSTOM)
    params, X, Y = _problem(CUSTOM, seed=2)
    J, grads, _ = reference.loss_and_grad(params, CUSTOM.activations, CUSTOM.loss, X, Y)
    assert J == pytest.approx(model.loss(params, X, Y), rel=1e-13)
    fd = finite_difference_gradient(model, params, X, Y, h=1e-6)
    _, kernels = model.loss_and_grad(params, X, Y)
    for g, f, k in zip(grads, fd, kernels):
        for a, b, c in zip(g, f, k):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)
    z = np.linspace(-3, 3, 7)[None, :]
    np.testing.assert_allclose(
        reference.activate("z*tanh(softplus(z))", z), z * np.tanh(np.logaddexp(0, z)), rtol=1e-15
    )


def test_reference_refuses_what_it_has_no_rule_for() -> None:
    import sympy as sp

    with pytest.raises(ValueError, match="the reference has no hand-written rule for gamma"):
        reference.dual(sp.gamma(sp.Symbol("z")), {sp.Symbol("z"): (np.ones(2), np.ones(2))})


@pytest.mark.parametrize(
    "spec",
    [CUSTOM, lbp.NetworkSpec((3, 5, 3), ("relu", "softmax"), "cross_entropy")],
    ids=["custom activation and loss", "softmax and cross-entropy"],
)
def test_kkt_residuals_are_zero_for_every_loss(spec: lbp.NetworkSpec) -> None:
    """∂L/∂λ and ∂L/∂x vanish at the kernels' states, measured by the reference (the custom
    log cosh loss used to show an adjoint residual of 1.82)."""
    model = lbp.compile(spec)
    params, X, Y = _problem(spec, seed=4)
    r = kkt_residuals(model, params, X, Y)
    assert r["forward"] < 1e-14 and r["adjoint"] < 1e-14
    _, grads = model.loss_and_grad(params, X, Y)
    norm = np.sqrt(sum(np.sum(gW**2) + np.sum(gb**2) for gW, gb in grads))
    assert r["gradient"] == pytest.approx(norm, rel=1e-14) and r["gradient"] > 1e-3


def test_kkt_residuals_see_a_wrong_adjoint() -> None:
    """The residual is not zero by construction: corrupt one λ and it shows."""
    model = lbp.compile(CUSTOM)
    params, X, Y = _problem(CUSTOM, seed=4)
    good = model.adjoint

    def wrong(p: list, X: np.ndarray, Y: np.ndarray) -> list[np.ndarray]:
        lams = good(p, X, Y)
        return [lams[0] * 1.01, *lams[1:]]

    model.adjoint = wrong  # type: ignore[method-assign]
    assert kkt_residuals(model, params, X, Y)["adjoint"] > 1e-5
