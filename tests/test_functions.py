"""One record per function (issue 9 items 1, 6, 7): records, stable forms, refusals, no branches."""

from __future__ import annotations

import re
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp.cli import main
from lagrange_bp.functions import (
    ACTIVATIONS,
    LOSSES,
    X_VAR,
    Z_VAR,
    get_activation,
    get_loss,
    is_identity,
)
from lagrange_bp.primitives import explicit, sigmoid, softplus, stable, step

ROOT = Path(__file__).resolve().parents[1]
z, x = Z_VAR, X_VAR


@pytest.mark.parametrize(
    ("name", "derivative", "in_output"),
    [
        ("identity", sp.S.One, sp.S.One),
        ("sigmoid", sigmoid(z) * (1 - sigmoid(z)), x * (1 - x)),
        ("tanh", 1 - sp.tanh(z) ** 2, 1 - x**2),
        ("relu", step(z), None),
        ("softplus", sigmoid(z), None),
    ],
)
def test_builtin_records(name: str, derivative: sp.Expr, in_output: sp.Expr | None) -> None:
    """σ' is SymPy's derivative of the definition; σ' in x = σ(z) is derived, then checked."""
    act = get_activation(name)
    assert act.key == act.text == name and act.builtin and act.elementwise
    assert act.derivative == derivative
    assert act.output_form == in_output  # type: ignore[attr-defined]
    ok, line = act.check_derivative(3)
    assert ok and line.startswith(f"{name}: σ' = "), line


def test_the_relu_family_asks_for_he_initialisation() -> None:
    assert [a for a in ACTIVATIONS if get_activation(a).he_init] == ["relu"]


def test_output_form_is_derived_not_typed_in() -> None:
    """σ = 2 tanh(z) + 1 has σ' = 2(1 − tanh²) = 3/2 + x − x²/2 in x = σ(z), found by SymPy."""
    act = get_activation("2*tanh(z) + 1")
    p = act.output_form  # type: ignore[attr-defined]
    assert sp.expand(p - (sp.Rational(3, 2) + x - x**2 / 2)) == 0
    assert is_identity(p.xreplace({x: act.definition}) - act.derivative)  # type: ignore[attr-defined]
    assert get_activation("z*tanh(softplus(z))").output_form is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("unstable", "stable_form"),
    [
        (sp.log(1 + sp.exp(z)), softplus(z)),
        (1 / (1 + sp.exp(-z)), sigmoid(z)),
        (sp.exp(z) / (1 + sp.exp(z)), sigmoid(z)),
        (sp.log(1 / (1 + sp.exp(-z))), -softplus(-z)),
        (sp.log(1 - sigmoid(z)), -softplus(z)),
        (sp.log(sp.cosh(z)), softplus(2 * z) - z - sp.log(2)),
        (sp.sinh(z) / sp.cosh(z), sp.tanh(z)),
        (sp.exp(z) / (1 + sp.exp(z)) ** 2, sigmoid(z) * sigmoid(-z)),
    ],
)
def test_stability_rewrites_are_identities(unstable: sp.Expr, stable_form: sp.Expr) -> None:
    assert stable(unstable) == stable_form
    assert is_identity(unstable - stable_form)
    for v in (-30, -1, 0, 2, 40):  # and numerically, to 25 digits
        a, b = (sp.N(explicit(e).subs(z, v), 30) for e in (unstable, stable_form))
        assert abs(a - b) <= sp.Float("1e-25") * max(1, abs(a))


def test_custom_softplus_does_not_overflow_where_the_builtin_is_finite() -> None:
    """log(1 + exp(z)) at z = ±800: printed as logaddexp, finite and equal to the built-in."""
    X = np.array([[800.0], [-800.0], [0.0]])
    outs = []
    for act in ("log(1 + exp(z))", "softplus"):
        model = lbp.compile(lbp.NetworkSpec((1, 1), act, "mse"))
        params = [(np.ones((1, 1)), np.zeros(1))]
        outs.append(model.forward(params, X))
        _, grads = model.loss_and_grad(params, X, np.zeros((3, 1)))
        assert np.isfinite(grads[0][0]).all() and np.isfinite(grads[0][1]).all()
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0][0, 0] == 800.0 and outs[0][1, 0] == 0.0


def test_sigmoid_tail_is_accurate_to_1e_12() -> None:
    """Relative error ≤ 1e-12 against mpmath for z ∈ [−700, 0] (½ tanh(z/2) + ½ gave 4% at −36)."""
    zs = np.concatenate([np.linspace(-700.0, 0.0, 1401), [-36.0, -40.0, -745.0 + 46]])
    model = lbp.compile(lbp.NetworkSpec((1, 1), "sigmoid", "mse"))
    got = model.forward([(np.ones((1, 1)), np.zeros(1))], zs[:, None])[:, 0]
    mpmath.mp.dps = 40
    exact = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in zs])
    assert np.max(np.abs(got / exact - 1)) <= 1e-12


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log(z)", "not defined and continuous for every real z"),
        ("z**z", "not defined and continuous for every real z"),
        ("tan(z)", "not defined and continuous for every real z"),
        ("sin(z)/z", "not defined and continuous for every real z"),
        ("z**(1/3)", "'z**(1/3)' is not a finite real number at z = -5"),
        (
            "sqrt(abs(z))",
            "the derivative σ' of activation 'sqrt(abs(z))' is not a finite real number at",
        ),
        ("exp(1000)*z", "constant exp(1000) is not a finite real number"),
        ("log(exp(z) + 2)", "overflows in floating point at z = 800, where its value is 800"),
    ],
)
def test_what_cannot_be_served_is_refused_at_construction(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        lbp.NetworkSpec((2, 3, 1), (text, "identity"))


def test_a_loss_is_checked_where_the_output_layer_puts_it() -> None:
    spec = lbp.NetworkSpec((2, 3, 1), ("tanh", "sigmoid"), "-y*log(x) - (1 - y)*log(1 - x)")
    assert spec.loss == "-y*log(x) - (1 - y)*log(1 - x)"
    with pytest.raises(
        ValueError, match=r"loss '-y\*log\(x\)' \(with output activation 'identity'\)"
    ):
        lbp.NetworkSpec((2, 3, 1), ("tanh", "identity"), "-y*log(x)")


def test_names_come_from_the_parsed_expression() -> None:
    """The spec stores the canonical text, which parses back to the same expression."""
    spec = lbp.NetworkSpec((2, 3, 1), ("  z*tanh(log(1+exp(z)))", "identity"), "abs(x - y)*e")
    assert spec.activations[0] == "z*tanh(log(exp(z) + 1))"
    assert spec.loss == "e*abs(x - y)"
    assert get_activation(spec.activations[0]) is get_activation(" z*tanh(log(1 + exp(z)))")
    assert get_activation(spec.activations[0]).latex == (
        r"\left[z \mapsto z \tanh{\left(\log{\left(e^{z} + 1 \right)} \right)}\right]"
    )
    assert get_loss(spec.loss).text == "e*abs(x - y)"


def test_train_refuses_what_cannot_compile_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """z**z used to pass derive/verify and fail in the code printer with a traceback."""
    code = main(["train", "--dataset", "iris", "--activations", "z**z,softmax", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "layer 1: activation 'z**z' is not defined and continuous for every real z" in err
    with pytest.raises(ValueError, match="not defined and continuous"):
        lbp.compile(lbp.NetworkSpec((4, 3), "z**z"))


def test_records_serve_every_builtin_loss_and_pair() -> None:
    assert LOSSES == ("mse", "cross_entropy")
    ce = get_loss("cross_entropy")
    assert ce.classification and ce.requires_output == "softmax"
    with pytest.raises(ValueError, match="needs a softmax output layer, but layer 2 is 'tanh'"):
        lbp.NetworkSpec((2, 3, 2), "tanh", "cross_entropy")


NAMES = "|".join([*ACTIVATIONS, *LOSSES])
BRANCH = re.compile(
    rf"""(==|!=|\bin)\s*\(?\s*["']({NAMES})["']|["']({NAMES})["']\s*(==|!=|\bin\b)"""
)


def test_no_code_outside_the_records_branches_on_a_function_name() -> None:
    """CONVENTIONS §3: kernels, proofs, rules, renderers, diagnostics and the CLI read records."""
    offenders = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted((ROOT / "lagrange_bp").glob("*.py"))
        if path.name not in ("functions.py", "primitives.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if BRANCH.search(line)
    ]
    assert offenders == []
    assert BRANCH.search('if act == "relu":') and BRANCH.search("x in ('softmax',)")


@pytest.mark.usefixtures("isolated_records")
def test_a_new_builtin_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's recipe: swish added as one record entry derives, proves, compiles, and
    agrees with the independent reference — nothing else names it."""
    from lagrange_bp import functions, reference

    swish = functions.make_elementwise(
        "swish", Z_VAR * sigmoid(Z_VAR), latex=r"\operatorname{swish}", builtin=True
    )
    monkeypatch.setitem(functions._BUILTIN_ACTIVATIONS, "swish", lambda: swish)
    get_activation.cache_clear()
    try:
        spec = lbp.NetworkSpec((3, 4, 2), ("swish", "identity"), "mse")
        assert spec.describe() == "3-4-2, swish/identity, mse"
        assert lbp.verify(spec).ok
        model = lbp.compile(spec)
        rng = np.random.default_rng(0)
        params = [
            (rng.normal(size=W.shape), rng.normal(size=b.shape)) for W, b in model.init_params()
        ]
        X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
        _, grads = model.loss_and_grad(params, X, Y)
        _, ref, _ = reference.loss_and_grad(params, spec.activations, spec.loss, X, Y)
        for g, r in zip(grads, ref):
            np.testing.assert_allclose(g[0], r[0], rtol=1e-12)
    finally:
        get_activation.cache_clear()


@pytest.mark.usefixtures("isolated_records")
def test_derivative_check_says_when_it_is_numerical(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where SymPy cannot simplify σ'_used − d/dz σ to 0, the check falls back to 30-digit
    values at 7 points and says so; a wrong σ' still fails."""
    from lagrange_bp import functions

    monkeypatch.setattr(functions, "is_identity", lambda e: False)
    ok, line = get_activation("sigmoid").check_derivative(1)
    assert ok and "to 25 digits at 7 points (SymPy could not simplify" in line
    monkeypatch.setattr(sigmoid, "fdiff", lambda self, argindex=1: sigmoid(self.args[0]))
    ok, line = get_activation("sigmoid").check_derivative(1)
    assert not ok and "is NOT d/dz of" in line
