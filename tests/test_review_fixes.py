"""Edge cases from review: constants in custom functions, abs, parser bounds, boundary errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp import checkpoint
from lagrange_bp.cli import main
from lagrange_bp.diagnostics import finite_difference_gradient
from lagrange_bp.expressions import parse
from lagrange_bp.rules import generic as G


@pytest.mark.parametrize("act", ["pi*z", "2**z", "z/sqrt(2)", "e*z", "sin(1)*z", "abs(z) + z"])
def test_custom_constants_and_abs_compile_and_verify(act: str) -> None:
    spec = lbp.NetworkSpec((2, 3, 1), (act, "identity"), "log(2)*(x - y)**2")
    assert lbp.verify(spec).ok
    model = lbp.compile(spec)
    rng = np.random.default_rng(1)
    params = [(rng.normal(size=W.shape), rng.normal(size=b.shape)) for W, b in model.init_params()]
    X, Y = rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    _, grads = model.loss_and_grad(params, X, Y)
    fd = finite_difference_gradient(model, params, X, Y, h=1e-6)
    assert max(float(np.max(np.abs(a - b))) for g, f in zip(grads, fd) for a, b in zip(g, f)) < 1e-6


def test_general_proof_with_abs() -> None:
    from lagrange_bp.verify_general import verify_general

    assert verify_general((lbp.NetworkSpec((2, 2, 1), ("abs(z)", "tanh")),)).ok


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(((((((2)**16)**16)**16)**16)**16)**16)**16", "constant powers must stay within 1e+12"),
        ("10**13 * z", "constant powers must stay within"),
        ("sqrt(-1)*z", "not a real, finite expression"),
        ("log(0) + z", "not a real, finite expression"),
        ("0**-1*z", "not a real, finite expression"),
    ],
)
def test_parser_bounds_constants(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        parse(text, ("z",), "activation")


def test_verify_refuses_a_derivation_of_another_spec() -> None:
    other = lbp.derive(lbp.NetworkSpec((2, 3, 1), "sigmoid"))
    with pytest.raises(ValueError, match="derivation is for 2-3-1, sigmoid/sigmoid, mse, not for"):
        lbp.verify(lbp.NetworkSpec((5, 4, 3), "relu"), derivation=other)


def test_sgd_step_refuses_arrays_it_would_have_to_copy() -> None:
    model = lbp.compile(lbp.NetworkSpec((2, 2), "tanh"), dtype="float32")
    params = [(np.ones((2, 2)), np.zeros(2))]  # float64: an in-place update would be lost
    with pytest.raises(ValueError, match="updates params in place, so W\\^1 and b\\^1 must"):
        model.sgd_step(params, np.ones((3, 2)), np.ones((3, 2)), 0.1)


def test_check_rule_edge_cases() -> None:
    spec = lbp.NetworkSpec((3, 4, 2), ("tanh", "sigmoid"))
    foreign = sp.MatrixSymbol("Q", G.X.shape[0], G.X.shape[1])
    report = lbp.check_rule(spec, "forward", foreign)
    assert (
        not report.ok
        and "cannot be evaluated with the generic-layer symbols" in report.counterexample
    )
    with pytest.raises(ValueError, match="needs at least two layers"):
        lbp.check_rule(lbp.NetworkSpec((3, 2), "tanh"), "adjoint", lambda **kw: 0)
    report = lbp.check_rule(
        spec, "forward", lambda W, b, x_prev, sigma: sigma(x_prev @ W.T + b) + 0j
    )
    assert not report.ok and "values of dtype complex128" in report.counterexample


def test_cli_refuses_infinite_rates_and_non_finite_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--dataset", "iris", "--lr", "inf"]) == 2
    assert "--lr must be a finite number > 0, got inf" in capsys.readouterr().err
    np.savez(tmp_path / "d.npz", X=np.array([[1.0, np.nan]] * 10), y=np.arange(10) % 2)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--target", "y"]) == 2
    assert "NaN or inf among the feature values" in capsys.readouterr().err
    csv = tmp_path / "d.csv"
    csv.write_text("a,y\n" + "\n".join(f"{i},{'nan' if i == 3 else i * 0.5}" for i in range(60)))
    assert main(["train", "--data", str(csv), "--target", "y"]) == 2
    assert "NaN or inf in the target 'y'" in capsys.readouterr().err
    big = tmp_path / "big.csv"
    big.write_text("a,y\n" + "1" * 200_000 + ",1\n2,0\n")
    assert main(["train", "--data", str(big), "--target", "y"]) == 2
    assert "cannot read as CSV" in capsys.readouterr().err


def test_crafted_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = lbp.NetworkSpec((4, 3), "softmax", "cross_entropy")
    path = checkpoint.save(tmp_path / "m.npz", spec, lbp.compile(spec).init_params())
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    listed = dict(arrays, meta=np.array(json.dumps([1, 2])))
    np.savez(tmp_path / "list.npz", **listed)
    with pytest.raises(lbp.CheckpointError, match="not a valid lagrange_bp checkpoint"):
        checkpoint.load(tmp_path / "list.npz")
    texts = dict(arrays, b1=np.array(["a", "b", "c"]))
    np.savez(tmp_path / "text.npz", **texts)
    with pytest.raises(lbp.CheckpointError):
        checkpoint.load(tmp_path / "text.npz")
    assert main(["evaluate", "--model", str(tmp_path / "text.npz"), "--dataset", "iris"]) == 2
    assert capsys.readouterr().err.startswith("lagrange-bp: error: model file 'text.npz'")
