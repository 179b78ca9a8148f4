"""verify(): the step-by-step proof, and that a wrong derivation fails it (issue 2 items 4, 6)."""

from __future__ import annotations

import pytest
import sympy as sp
from conftest import SMALL_SPECS, SPEC_IDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lagrange_bp as lbp
from lagrange_bp.primitives import sigmoid


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=SPEC_IDS)
def test_every_step_is_proven(spec: lbp.NetworkSpec) -> None:
    report = lbp.verify(spec)
    assert report.ok
    assert [s.label for s in report.steps] == ["a", "b", "c", "d", "e"]
    assert all(s.ok and s.seconds >= 0 for s in report.steps)
    text = str(report)
    assert text.startswith(
        f"Proof that the KKT conditions of L are backpropagation for {spec.describe()}: PROVEN"
    )
    assert f"all {spec.n_params} parameters agree exactly at 2 random points" in text
    assert "Schwartz–Zippel" in text and "exact symbolic" in text


def test_report_says_how_and_how_long() -> None:
    report = lbp.verify(lbp.NetworkSpec((2, 3, 1), "sigmoid"), trials=3)
    (a, b, c, _, e) = report.steps
    assert a.detail == "4 of 4 equations identical to the forward pass"
    assert b.detail == "4 of 4 residuals ∂L/∂x^k_i are exactly 0"
    assert c.method.startswith("exact randomized identity test in GF(2^61-1)")
    assert "3 random points" in c.detail
    bound = float(c.detail.split("≤ ")[1].split(" ")[0])
    assert 0 < bound < 1e-30
    assert "sigmoid: σ' = (1 - sigmoid(z))*sigmoid(z)" in e.detail
    assert report.seconds == pytest.approx(
        report.derive_seconds + sum(s.seconds for s in report.steps)
    )


def test_a_wrong_gradient_fails_the_proof() -> None:
    spec = lbp.NetworkSpec((2, 3, 1), "sigmoid")
    d = lbp.derive(spec)
    p = d.params[0][0][1, 0]  # W^1[2,1]
    d.gradients[p] = -d.gradients[p]
    report = lbp.verify(spec, derivation=d)
    assert not report.ok
    c = report.steps[2]
    assert not c.ok and "∂L/∂W^1[2,1] ≠ ∂J/∂W^1[2,1] at random point 1" in c.detail
    assert "NOT PROVEN" in str(report) and "[FAILED] (c)" in str(report)


def test_a_gradient_with_a_swapped_weight_fails() -> None:
    spec = lbp.NetworkSpec((2, 3, 2), "tanh")
    d = lbp.derive(spec)
    W2 = d.params[1][0]
    p = W2[0, 1]
    d.gradients[p] = d.gradients[p].xreplace({W2[0, 1]: W2[1, 1]})
    d.gradients[W2[0, 0]] = d.gradients[W2[0, 0]].xreplace({d.symbols.x[1][0]: d.symbols.x[1][1]})
    assert not lbp.verify(spec, derivation=d).steps[2].ok


def test_a_wrong_adjoint_fails_steps_b_and_c() -> None:
    spec = lbp.NetworkSpec((2, 3, 2), "tanh")
    d = lbp.derive(spec)
    i = len(d.adjoint) - 1  # λ^1[3]
    d.adjoint[i] = sp.Eq(d.adjoint[i].lhs, 2 * d.adjoint[i].rhs, evaluate=False)
    report = lbp.verify(spec, derivation=d)
    assert [s.ok for s in report.steps] == [True, False, False, True, True]
    assert report.steps[1].detail.startswith("with λ^1[3] = ")
    assert "≠ 0" in report.steps[1].detail


def test_a_wrong_forward_equation_fails_step_a() -> None:
    spec = lbp.NetworkSpec((2, 2, 1), "sigmoid")
    d = lbp.derive(spec)
    d.forward[0] = sp.Eq(d.forward[0].lhs, sp.tanh(d.forward[0].rhs.args[0]), evaluate=False)
    report = lbp.verify(spec, derivation=d)
    assert not report.steps[0].ok
    assert "but the forward pass gives sigmoid(" in report.steps[0].detail


@pytest.mark.usefixtures("isolated_records")
def test_a_wrong_derivative_rule_is_caught_by_step_e(monkeypatch: pytest.MonkeyPatch) -> None:
    """(c) holds for any consistent σ' rule; only (e) ties σ' to the real derivative of σ."""

    def wrong(self: sigmoid, argindex: int = 1) -> sp.Expr:
        s = sigmoid(self.args[0])
        return s * (1 + s)

    monkeypatch.setattr(sigmoid, "fdiff", wrong)
    report = lbp.verify(lbp.NetworkSpec((2, 2, 1), "sigmoid"))
    assert [s.ok for s in report.steps] == [True, True, True, True, False]
    assert "sigmoid: σ' = (sigmoid(z) + 1)*sigmoid(z)" in report.steps[4].detail


def test_deep_narrow_network() -> None:
    report = lbp.verify(lbp.NetworkSpec((2,) * 17, "tanh"))
    assert report.ok and f"all {16 * 6} parameters agree" in report.steps[2].detail


def test_progress_reports_each_stage() -> None:
    lines: list[str] = []
    assert lbp.verify(lbp.NetworkSpec((2, 1)), progress=lines.append).ok
    assert lines[0].startswith("verify: derived 2-1, sigmoid, mse")
    assert [line.split(")")[0] for line in lines[1:]] == [f"verify: ({c}" for c in "abcde"]


@st.composite
def specs(draw: st.DrawFn) -> lbp.NetworkSpec:
    widths = draw(st.lists(st.integers(1, 3), min_size=2, max_size=4))
    names = ["identity", "sigmoid", "tanh", "relu", "softplus", "softmax"]
    acts = draw(
        st.lists(st.sampled_from(names), min_size=len(widths) - 1, max_size=len(widths) - 1)
    )
    loss = "cross_entropy" if acts[-1] == "softmax" and draw(st.booleans()) else "mse"
    return lbp.NetworkSpec(widths, acts, loss)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_small_specs_are_proven(spec: lbp.NetworkSpec) -> None:
    report = lbp.verify(spec, trials=1)
    assert report.ok, str(report)
