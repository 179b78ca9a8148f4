"""Weight decay in the objective (issue 14 item 2): J + (α/2) Σ_k ‖W^k‖², biases not decayed.

The term enters the Lagrangian, so every stationarity condition is derived with it:
∂L/∂W^k = −Σ_i (σ'⊙λ^k) x^{k-1ᵀ} + α W^k; ∂L/∂b^k and the adjoint recursion are unchanged.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp import checkpoint, reference
from lagrange_bp.diagnostics import finite_difference_gradient
from lagrange_bp.generic import derive_generic
from lagrange_bp.lagrangian import ALPHA
from lagrange_bp.verify_general import verify_general

ARCHS = [
    lbp.NetworkSpec((3, 4, 2), ("tanh", "softmax"), "cross_entropy", weight_decay=0.01),
    lbp.NetworkSpec((3, 4, 3, 2), ("relu", "sigmoid", "identity"), "mse", weight_decay=0.25),
    lbp.NetworkSpec((2, 3, 1), ("z*tanh(log(1 + exp(z)))", "identity"), "log(cosh(x - y))", 1e-3),
]
IDS = [s.describe() for s in ARCHS]


def _plain(spec: lbp.NetworkSpec) -> lbp.NetworkSpec:
    return dataclasses.replace(spec, weight_decay=0.0)


def _data(spec: lbp.NetworkSpec, batch: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, spec.widths[0]))
    if spec.loss == "cross_entropy":
        return X, np.eye(spec.widths[-1])[rng.integers(0, spec.widths[-1], batch)]
    return X, rng.normal(size=(batch, spec.widths[-1]))


@pytest.mark.parametrize(
    ("alpha", "error", "message"),
    [
        (-0.1, ValueError, "finite number α ≥ 0"),
        (float("nan"), ValueError, "finite number α ≥ 0"),
        (float("inf"), ValueError, "finite number α ≥ 0"),
        (True, TypeError, "a number α ≥ 0"),
        ("0.1", TypeError, "a number α ≥ 0"),
    ],
)
def test_bad_weight_decay_is_refused(alpha: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        lbp.NetworkSpec((2, 1), "identity", "mse", weight_decay=alpha)  # type: ignore[arg-type]


def test_the_spec_says_its_weight_decay_and_keeps_it_exact() -> None:
    spec = lbp.NetworkSpec((2, 1), "identity", "mse", weight_decay=np.float32(0.5))
    assert spec.weight_decay == 0.5 and spec.decay == sp.Rational(1, 2)
    assert lbp.NetworkSpec((2, 1), weight_decay=0.01).decay == sp.Rational(1, 100)
    assert spec.describe() == "2-1, identity, mse, weight decay 0.5"
    assert lbp.NetworkSpec((2, 1)).describe() == "2-1, sigmoid, mse"


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_derived_weight_gradient_gains_alpha_w_and_nothing_else(spec: lbp.NetworkSpec) -> None:
    """∂L/∂W^k_ij = (the plain objective's) + α W^k_ij; ∂L/∂b, λ and x unchanged."""
    d, plain = lbp.derive(spec), lbp.derive(_plain(spec))
    assert [eq.rhs for eq in d.forward] == [eq.rhs for eq in plain.forward]
    assert [eq.rhs for eq in d.adjoint] == [eq.rhs for eq in plain.adjoint]
    for W, b in d.params:
        for w in W:
            assert sp.expand(d.gradients[w] - ALPHA * w - plain.gradients[w]) == 0
        for p in b:
            assert d.gradients[p] == plain.gradients[p]
    assert sp.expand(d.lagrangian - plain.lagrangian) == sp.expand(
        ALPHA / 2 * sum(w**2 for W, _ in d.params for w in W)
    )


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_verify_proves_the_decayed_objective(spec: lbp.NetworkSpec) -> None:
    report = lbp.verify(spec)
    assert report.ok, str(report)
    assert "+ (α/2) Σ_k ‖W^k‖², for every α" in report.steps[2].claim


def test_verify_fails_a_derivation_without_the_decay_term() -> None:
    spec = ARCHS[0]
    d = lbp.derive(spec)
    d.gradients = {p: g.subs(ALPHA, 0) for p, g in d.gradients.items()}
    report = lbp.verify(spec, derivation=d)
    assert not report.ok and not report.steps[2].ok
    assert "the Lagrangian gives" in report.steps[2].detail


def test_general_proof_with_weight_decay() -> None:
    report = verify_general(weight_decay=True)
    assert report.ok, str(report)
    assert "α W^k = ∂J/∂W^k" in report.steps[2].detail
    assert "weight decay 0.01" in report.steps[4].detail
    g = derive_generic(True)
    assert sp.srepr(g.weight_gradient.rhs).count("α") == 1
    # the plain generic layer does not give the decayed specs' gradients: (g5) catches it
    wrong = verify_general(derivation=derive_generic(False), weight_decay=True)
    assert not wrong.ok and not wrong.steps[4].ok


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_compiled_kernels_are_proven_with_the_decay(spec: lbp.NetworkSpec) -> None:
    model = lbp.compile(spec)
    assert "np.vdot(W1, W1)" in model.source("loss")
    assert f"+ α W^1, α = {spec.weight_decay!r}" in model.source("loss_and_grad")
    report = lbp.verify(model)
    assert report.ok, str(report)


def test_a_kernel_with_another_alpha_fails_the_proof() -> None:
    model = lbp.compile(ARCHS[0])
    kernel = model.kernels["loss_and_grad"]
    assert kernel.source.count("np.multiply(W2, 0.01") == 1  # α W^2 in ∂L/∂W^2
    kernel.source = kernel.source.replace("np.multiply(W2, 0.01", "np.multiply(W2, 0.02")
    report = lbp.verify(model)
    failed = [s.label for s in report.steps if not s.ok]
    assert failed == ["loss_and_grad"], str(report)


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_model_equals_reference_and_central_differences(spec: lbp.NetworkSpec) -> None:
    model = lbp.compile(spec)
    params = model.init_params(seed=2)
    X, Y = _data(spec)
    loss, grads = model.loss_and_grad(params, X, Y)
    ref_loss, ref_grads, _ = reference.loss_and_grad(
        params, spec.activations, spec.loss, X, Y, spec.weight_decay
    )
    plain_loss = lbp.compile(_plain(spec)).loss(params, X, Y)
    penalty = spec.weight_decay / 2 * sum(float(np.sum(W**2)) for W, _ in params)
    assert loss == pytest.approx(plain_loss + penalty, rel=1e-13)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    fd = finite_difference_gradient(model, params, X, Y)
    for (gW, gb), (rW, rb), (fW, fb) in zip(grads, ref_grads, fd):
        np.testing.assert_allclose(gW, rW, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(gb, rb, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(gW, fW, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gb, fb, rtol=1e-6, atol=1e-8)


def test_sgd_step_equals_torch_sgd_weight_decay_over_ten_steps() -> None:
    """torch.optim.SGD(weight_decay=α) on the weights (biases in a group without decay)."""
    torch = pytest.importorskip("torch")
    spec = lbp.NetworkSpec((4, 6, 3), ("tanh", "softmax"), "cross_entropy", weight_decay=0.05)
    model = lbp.compile(spec)
    params = model.init_params(seed=1)
    tp = [
        (torch.tensor(W.copy(), requires_grad=True), torch.tensor(b.copy(), requires_grad=True))
        for W, b in params
    ]
    opt = torch.optim.SGD(
        [
            {"params": [W for W, _ in tp], "weight_decay": 0.05},
            {"params": [b for _, b in tp], "weight_decay": 0.0},
        ],
        lr=0.3,
    )
    for step in range(10):
        X, Y = _data(spec, batch=8, seed=step)
        model.sgd_step(params, X, Y, 0.3)
        opt.zero_grad()
        z1 = torch.tensor(X) @ tp[0][0].T + tp[0][1]
        z2 = torch.tanh(z1) @ tp[1][0].T + tp[1][1]
        J = -(torch.tensor(Y) * torch.log_softmax(z2, dim=1)).sum() / len(X)
        J.backward()
        opt.step()
    gap = max(
        float(np.max(np.abs(a - t.detach().numpy())))
        for pair, tpair in zip(params, tp)
        for a, t in zip(pair, tpair)
    )
    assert gap < 1e-12, gap


def test_training_with_decay_shrinks_the_weights_and_checkpoints_keep_alpha(
    tmp_path: Path,
) -> None:
    from lagrange_bp.datasets import load

    data = load("iris")
    plain = lbp.NetworkSpec((4, 8, 3), ("tanh", "softmax"), "cross_entropy")
    decayed = dataclasses.replace(plain, weight_decay=0.05)
    runs = {
        s.weight_decay: lbp.train(lbp.compile(s), data.X_train, data.Y_train, 20, 16, 0.1, seed=0)
        for s in (plain, decayed)
    }

    def norm(params: list) -> float:
        return sum(float(np.sum(W**2)) for W, _ in params)

    assert norm(runs[0.05].params) < 0.8 * norm(runs[0.0].params)
    path = tmp_path / "m.npz"
    checkpoint.save(path, decayed, runs[0.05].params)
    spec, params, _ = checkpoint.load(path)
    assert spec == decayed and spec.weight_decay == 0.05
    np.testing.assert_array_equal(params[0][0], runs[0.05].params[0][0])


def test_rules_and_grading_refuse_a_decayed_spec() -> None:
    with pytest.raises(ValueError, match="without weight decay"):
        lbp.check_rule(ARCHS[0], "bias_gradient", lambda z, lam, dsigma: lam.sum(0))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lagrange_bp", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_derives_verifies_and_trains_with_weight_decay(tmp_path: Path) -> None:
    out = _cli(
        "derive", "--widths", "2,2,1", "--activations", "tanh,sigmoid", "--weight-decay", "0.01"
    )
    assert out.returncode == 0, out.stderr
    assert "L = ℓ(y, x^N) + (α/2) Σ_k ‖W^k‖² + Σ_k λ^kᵀ (x^k − σ_k(z^k))" in out.stdout
    assert "∂L/∂W^1[1,1] = W^1[1,1]*α + x^0[1]*λ^1[1]*(x^1[1]**2 - 1)" in out.stdout
    assert "weight decay α = 0.01" in out.stdout
    general = _cli("derive", "--general", "--weight-decay", "1")
    assert "∂L/∂W^k = α W^k - G^k X^{k-1}ᵀ" in general.stdout, general.stderr
    assert "(biases are not decayed)" in general.stdout
    doc = _cli(
        "derive", "--weight-decay", "0.1", "--format", "latex", "--output", str(tmp_path / "d.tex")
    )
    assert doc.returncode == 2 and "without weight decay" in doc.stderr
    proof = _cli("verify", "--compiled", "--widths", "3,4,2", "--weight-decay", "0.5")
    assert proof.returncode == 0 and "weight decay 0.5: PROVEN" in proof.stdout, proof.stderr
    bad = _cli("verify", "--weight-decay", "-1")
    assert bad.returncode == 2 and "weight_decay must be a finite number α ≥ 0" in bad.stderr
    model = tmp_path / "iris.npz"
    trained = _cli(
        "train",
        "--dataset",
        "iris",
        "--epochs",
        "3",
        "--weight-decay",
        "0.01",
        "--save",
        str(model),
    )
    assert trained.returncode == 0, trained.stderr
    assert checkpoint.load(model)[0].weight_decay == 0.01


def test_estimator_alpha_is_the_objective_weight_decay_per_batch() -> None:
    from lagrange_bp.sklearn import LagrangeMLPClassifier

    X, y = _data(lbp.NetworkSpec((4, 3)), batch=60)
    y = (X[:, 0] > 0).astype(int)
    clf = LagrangeMLPClassifier((5,), alpha=0.3, batch_size=20, max_iter=3, random_state=0)
    with pytest.warns(Warning):  # too few epochs to converge, as scikit-learn warns
        clf.fit(X, y)
    assert clf.spec_.weight_decay == pytest.approx(0.3 / 20)
    with pytest.warns(Warning):
        clf.partial_fit(X[:7], y[:7])  # a smaller chunk keeps the first fit's α
    assert clf.spec_.weight_decay == pytest.approx(0.3 / 20)
    clf.set_params(alpha=3.0, warm_start=True)
    with pytest.raises(ValueError, match=r"trained with alpha=0\.3"):
        clf.fit(X, y)


def test_the_torch_export_trains_on_the_decayed_objective() -> None:
    """module(X, Y) is J with (α/2) Σ‖W^k‖², its backward the derived ∂L/∂W^k with α W^k;
    module(X) alone refuses: a torch loss after it would miss the penalty."""
    torch = pytest.importorskip("torch")
    spec = ARCHS[0]
    model = lbp.compile(spec)
    params = model.init_params(seed=2)
    module = lbp.to_torch(spec, params=params)
    X, Y = _data(spec)
    J = module(torch.tensor(X), torch.tensor(Y))
    J.backward()
    loss, grads = model.loss_and_grad(params, X, Y)
    assert J.item() == pytest.approx(loss, rel=1e-12)
    for k, (gW, gb) in enumerate(grads, start=1):
        np.testing.assert_allclose(
            getattr(module, f"W{k}").grad.numpy(), gW, rtol=1e-10, atol=1e-15
        )
        np.testing.assert_allclose(
            getattr(module, f"b{k}").grad.numpy(), gb, rtol=1e-10, atol=1e-15
        )
    with pytest.raises(ValueError, match="weight decay"):
        module(torch.tensor(X))
    once = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    (3 * module(torch.tensor(X), torch.tensor(Y))).backward()  # d(3J) = 3 dJ, α W^k included
    for p, g in zip(module.parameters(), once):
        np.testing.assert_allclose(p.grad.numpy(), 3 * g.numpy(), rtol=1e-12, atol=1e-15)
