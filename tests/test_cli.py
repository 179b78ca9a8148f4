"""The command line: derive / verify / demo, exit codes 0, 1, 2 (issue 2 item 5)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sympy as sp
from conftest import run_cli as run

from lagrange_bp.primitives import sigmoid


def test_derive_text_reads_in_derivation_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "derive", "--widths", "2,3,1", "--activations", "sigmoid")
    assert code == 0
    order = [
        out.index(h)
        for h in (
            "Lagrangian of the network 2-3-1",
            "where z^k = W^k x^{k-1} + b^k",
            "1. ∂L/∂λ^k = 0 gives the forward pass",
            "2. ∂L/∂x^k = 0 gives the adjoint",
            "3. ∂L/∂W^k and ∂L/∂b^k",
            "Update rule",
        )
    ]
    assert order == sorted(order)
    assert "  z^1[1] = W^1[1,1]*x^0[1] + W^1[1,2]*x^0[2] + b^1[1]" in out
    assert "⇒   x^1[1] = sigmoid(z^1[1])" in out
    assert "∂L/∂x^2[1] = x^2[1] - y[1] + λ^2[1] = 0   ⇒   λ^2[1] = -x^2[1] + y[1]" in out
    assert "⇒   λ^1[2] = W^2[1,2]*x^2[1]*λ^2[1]*(1 - x^2[1])" in out  # σ' = x(1 − x), in states
    assert "  ∂L/∂b^2[1] = -x^2[1]*λ^2[1]*(1 - x^2[1])" in out
    assert "W1_0_1" not in out


def test_derive_latex(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "derive", "--widths", "2,2", "--activations", "tanh", "--format", "latex"
    )
    assert code == 0
    assert out.count(r"\begin{align*}") == out.count(r"\end{align*}") == 6
    assert (
        r"z^{(1)}_{1} &= W^{(1)}_{1,1} x^{(0)}_{1} + W^{(1)}_{1,2} x^{(0)}_{2} + b^{(1)}_{1}" in out
    )
    assert r"\lambda^{(1)}_{1} = - x^{(1)}_{1} + y_{1}" in out
    assert r"\tanh" in out


def test_derive_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "derive",
        "--widths",
        "3,2",
        "--activations",
        "softmax",
        "--loss",
        "cross_entropy",
        "--format",
        "json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["spec"] == {
        "widths": [3, 2],
        "activations": ["softmax"],
        "loss": "cross_entropy",
        "weight_decay": 0.0,
    }
    assert doc["adjoint"][0] == {
        "lhs": "λ^1[1]",
        "rhs": "y[1]/x^1[1]",
        "latex": r"\lambda^{(1)}_{1} = \frac{y_{1}}{x^{(1)}_{1}}",
        "condition": "λ^1[1] - y[1]/x^1[1] = 0",
    }
    assert len(doc["gradients"]) == 3 * 2 + 2
    assert doc["forward"][1]["rhs"] == "softmax(2, z^1[1], z^1[2])"
    # each pre-activation with its definition (it printed z^1[1] = z^1[1]: issue 11 item 11)
    assert (
        doc["preactivations"][0]["rhs"]
        == "W^1[1,1]*x^0[1] + W^1[1,2]*x^0[2] + W^1[1,3]*x^0[3] + b^1[1]"
    )
    assert doc["preactivations"][0]["latex"].startswith("z^{(1)}_{1} = W^{(1)}_{1,1} x^{(0)}_{1}")


def test_verify_proven_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "verify",
        "--widths",
        "3,4,3",
        "--activations",
        "tanh,softmax",
        "--loss",
        "cross_entropy",
    )
    assert code == 0
    assert out.startswith(
        "Proof that the KKT conditions of L are backpropagation for "
        "3-4-3, tanh/softmax, cross_entropy: PROVEN"
    )
    assert "verify: (e) ok" in err


def test_verify_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--widths", "2,1", "--json", "--trials", "1")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and [s["step"] for s in doc["steps"]] == list("abcde")


@pytest.mark.usefixtures("isolated_records")
def test_verify_not_proven_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sigmoid, "fdiff", lambda self, argindex=1: sp.S.One)
    code, out, _ = run(capsys, "verify", "--widths", "2,1", "--activations", "sigmoid")
    assert code == 1
    assert "NOT PROVEN" in out and "[FAILED] (e)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["derive", "--widths", "3"], "widths needs at least two entries"),
        (["derive", "--widths", "2,0,1"], "widths[1] must be a positive integer, got 0"),
        (["derive", "--widths", "2,-1"], "widths[1] must be a positive integer, got -1"),
        (["derive", "--widths", "2,1.5"], "widths must be comma-separated integers"),
        (["verify", "--activations", "gelu"], "unknown activation 'gelu' for layer 1; known: "),
        (["derive", "--activations", "tanh,tanh,tanh"], "expected 1 or 2 names"),
        (["derive", "--loss", "l1"], "unknown loss 'l1'; known: mse, cross_entropy"),
        (["derive", "--loss", "cross_entropy"], "needs a softmax output layer"),
        (
            [
                "verify",
                "--widths",
                "784,32,10",
                "--activations",
                "softmax",
                "--loss",
                "cross_entropy",
            ],
            "above the exact-derivation limit of 25000",
        ),
        (["derive", "--max-weights", "-1"], "--max-weights must be ≥ 0"),
        (["verify", "--trials", "0"], "--trials must be a positive integer"),
        (["derive", "--format", "pdf"], "invalid choice: 'pdf'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_input_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lagrange-bp: error: ") and message in err


def test_console_script_bad_input_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lagrange_bp", "derive", "--widths", "2,0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == "lagrange-bp: error: widths[1] must be a positive integer, got 0\n"


def test_demo_derives_proves_compiles_and_trains(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo")
    assert code == 0
    assert "=== 1. Derivation for a 2-3-1 network" in out
    assert out.count(": PROVEN") == 4
    assert "8-8-8-8-3, tanh/tanh/tanh/softmax, cross_entropy: PROVEN" in out
    assert (  # the code it just trained with, run exactly (issue 10 item 3)
        "Proof that the compiled kernels are backpropagation for 64-128-10, tanh/softmax, "
        "cross_entropy: PROVEN" in out
    )
    assert "General proof (any depth N, any widths n_k, any batch size B): PROVEN" in out
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    gap = float(out.split("at the trained weights: ")[1].split()[0])
    assert acc > 95.0 and gap < 1e-10
    assert "demo: all proofs hold, training works" in out
