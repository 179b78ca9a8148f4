"""Custom activations and losses from safely parsed strings (issue 6 items 3 and 4)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp.cli import main
from lagrange_bp.datasets import load
from lagrange_bp.diagnostics import finite_difference_gradient
from lagrange_bp.expressions import parse

MISH = "z*tanh(log(1 + exp(z)))"
MISH_TEXT = "z*tanh(log(exp(z) + 1))"  # the canonical text of the parsed expression
LOGCOSH = "log(cosh(x - y))"


def test_parse_builds_sympy_without_evaluating() -> None:
    z = sp.Symbol("z", real=True)
    assert parse(MISH, ("z",), "activation") == z * sp.tanh(sp.log(1 + sp.exp(z)))
    assert parse("0.5*z**2 - pi", ("z",), "activation") == z**2 / 2 - sp.pi
    x, y = sp.Symbol("x", real=True), sp.Symbol("y", real=True)
    assert parse(LOGCOSH, ("x", "y"), "loss") == sp.log(sp.cosh(x - y))


HOSTILE = [
    ("__import__('os').system('touch {marker}')", "only calls of plain function names"),
    ("__import__('os')", "function not allowed"),
    ("z.__class__.__mro__", "attribute access is not allowed"),
    ("__builtins__", "dunder names are not allowed"),
    ("().__class__", "attribute access is not allowed"),
    ("eval('1')", "function not allowed"),
    ("exec('x = 1')", "function not allowed"),
    ("open('{marker}', 'w')", "function not allowed"),
    ("lambda: 1", "lambdas are not allowed"),
    ("[c for c in 'abc']", "comprehensions are not allowed"),
    ("{{k: 1 for k in 'a'}}", "comprehensions are not allowed"),
    ("(c for c in 'abc')", "comprehensions are not allowed"),
    ("import os", "is not a valid expression"),
    ("x = 1", "is not a valid expression"),
    ("z; z", "is not a valid expression"),
    ("exp(z, z)", "exp takes exactly one positional argument"),
    ("exp(z=1)", "exp takes exactly one positional argument"),
    ("exp(*[z])", "exp takes exactly one positional argument"),
    ("w + z", "unknown variable (use z, pi, e): 'w'"),
    ("'text'", "only numbers are allowed as constants"),
    ("True", "only numbers are allowed as constants"),
    ("z if z else 0", "IfExp is not allowed"),
    ("z[0]", "Subscript is not allowed"),
    ("z @ z", "BinOp is not allowed"),
    ("9**9**9**9", "constant exponents must be at most 16"),
    ("1e400 * z", "numbers must be finite"),
    ("z / 0", "division by zero"),
    ("(" * 60 + "z" + ")" * 60, "nested too deeply"),
    ("z" + " + z" * 200, "too long"),
    ("-" * 250 + "z", "too large"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE, ids=[h[0][:30] for h in HOSTILE])
def test_hostile_strings_are_refused_quickly(tmp_path: Path, text: str, message: str) -> None:
    marker = tmp_path / "executed"
    text = text.format(marker=marker)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text, ("z",), "activation")
    assert time.perf_counter() - start < 1.0
    assert not marker.exists()
    with pytest.raises(ValueError):
        lbp.NetworkSpec((2, 2), text)


def test_spec_messages_for_custom_strings() -> None:
    with pytest.raises(
        ValueError, match=r"unknown activation 'swish' for layer 2; known: .* or an expression in z"
    ):
        lbp.NetworkSpec((2, 3, 1), ("tanh", "swish"))
    with pytest.raises(ValueError, match=r"layer 1: activation 'z\.real': attribute access"):
        lbp.NetworkSpec((2, 1), "z.real")
    with pytest.raises(ValueError, match="loss 'y\\*\\*2' does not depend on the output x"):
        lbp.NetworkSpec((2, 1), "tanh", "y**2")
    with pytest.raises(
        ValueError, match="unknown loss 'hinge'; known: mse, cross_entropy, or an expression in x"
    ):
        lbp.NetworkSpec((2, 1), "tanh", "hinge")


SPEC = lbp.NetworkSpec((3, 4, 2), (MISH, "identity"), LOGCOSH)


def test_custom_functions_derive_and_verify() -> None:
    d = lbp.derive(SPEC)
    z1 = d.preactivations[0].rhs
    assert d.forward[0].rhs == z1 * sp.tanh(sp.log(sp.exp(z1) + 1))
    report = lbp.verify(SPEC)
    assert report.ok, str(report)
    assert SPEC.activations[0] == MISH_TEXT
    assert f"{MISH_TEXT}: σ' = " in report.steps[4].detail


def test_custom_functions_general_proof() -> None:
    from lagrange_bp.verify_general import verify_general

    report = verify_general((SPEC,))
    assert report.ok and "3-4-2, " + MISH_TEXT in report.steps[4].detail


def test_custom_functions_compile_match_finite_differences() -> None:
    model = lbp.compile(SPEC)
    rng = np.random.default_rng(0)
    params = [(rng.normal(size=W.shape), rng.normal(size=b.shape)) for W, b in model.init_params()]
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    loss, grads = model.loss_and_grad(params, X, Y)
    z2 = np.tanh(np.log1p(np.exp(X @ params[0][0].T + params[0][1])))
    out = (X @ params[0][0].T + params[0][1]) * z2 @ params[1][0].T + params[1][1]
    assert loss == pytest.approx(np.log(np.cosh(out - Y)).sum() / 6, rel=1e-12)
    fd = finite_difference_gradient(model, params, X, Y, h=1e-6)
    worst = max(float(np.max(np.abs(a - b))) for g, f in zip(grads, fd) for a, b in zip(g, f))
    assert worst < 1e-7


def test_custom_functions_train_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    data = load("moons")
    spec = lbp.NetworkSpec((2, 16, 2), (MISH, "softmax"), "cross_entropy")
    res = lbp.train(
        lbp.compile(spec),
        data.X_train,
        data.Y_train,
        epochs=30,
        lr=0.5,
        validation=(data.X_test, data.Y_test),
    )
    assert res.history["val_accuracy"][-1] > 0.85
    assert (
        main(
            ["verify", "--widths", "2,3,1", "--activations", f"{MISH},identity", "--loss", LOGCOSH]
        )
        == 0
    )
    assert ": PROVEN" in capsys.readouterr().out
    assert main(["derive", "--widths", "2,1", "--activations", "__import__('os')"]) == 2
    assert "function not allowed" in capsys.readouterr().err
