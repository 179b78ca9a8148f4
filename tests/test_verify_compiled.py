"""verify(model): the generated source itself, run exactly, against the chain rule (issue 10
items 1–3 and 5), and the mutations it must catch (item 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import SMALL_SPECS, run_cli

import lagrange_bp as lbp

SPECS = [
    *SMALL_SPECS,
    lbp.NetworkSpec((5, 7, 6, 4), ("relu", "sigmoid", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((3, 4, 4, 2), ("softplus", "tanh", "sigmoid"), "mse"),
    lbp.NetworkSpec((3, 4, 3), ("tanh", "softmax"), "mse"),
    lbp.NetworkSpec((3, 4, 2), ("z*tanh(log(1 + exp(z)))", "identity"), "log(cosh(x - y))"),
    lbp.NetworkSpec((2, 3, 1), ("pi*z + abs(z)", "2*tanh(z) + 1"), "(x - y)**2/3"),
    lbp.NetworkSpec((2, 3, 1), ("relu(z)**2", "sigmoid"), "-y*log(x) - (1 - y)*log(1 - x)"),
]


@pytest.mark.parametrize("spec", SPECS, ids=[s.describe() for s in SPECS])
def test_every_kernel_is_proven(spec: lbp.NetworkSpec) -> None:
    report = lbp.verify(lbp.compile(spec))
    assert report.ok, str(report)
    assert [s.label for s in report.steps] == [
        "forward",
        "loss",
        "adjoint",
        "loss_and_grad",
        "sgd_step",
    ]
    text = str(report)
    assert text.startswith(
        f"Proof that the compiled kernels are backpropagation for {spec.describe()}"
    )
    assert "equal exactly at 1 random point of GF(2^61-1)" in text
    assert "chance that a wrong kernel agrees ≤ " in text


MUTANT = lbp.NetworkSpec((4, 5, 5, 5), ("tanh", "sigmoid", "softmax"), "cross_entropy")
TANH_VJP = (
    "    np.square(x1, out=g1)\n    np.subtract(1.0, g1, out=g1)\n"
    "    np.multiply(g1, lam1, out=g1)\n"
)
LAM1 = "    # Λ^1 = G^2 W^2\n    np.matmul(g2, W2, out=lam1)\n"
W2_UPDATE = "    np.add(W2, gW2, out=W2)\n"
MUTATIONS = [
    (
        "flip a sign",
        "sgd_step",
        W2_UPDATE,
        W2_UPDATE.replace("add", "subtract"),
        "sgd_step: W^2 is not",
    ),
    ("drop σ'", "loss_and_grad", TANH_VJP, "    np.copyto(g1, lam1)\n", "loss_and_grad: ∂L/∂W^1"),
    ("transpose a matrix product", "forward", "x1, W2.T, out=x2", "x1, W2, out=x2", "forward: X^3"),
    (
        "1/B twice",
        "loss_and_grad",
        "    np.divide(z3, B, out=z3)\n",  # G^3 in Z^3's buffer
        "    np.divide(z3, B, out=z3)\n    np.divide(z3, B, out=z3)\n",
        "loss_and_grad: ∂L/∂W^1",
    ),
    ("1/B never", "adjoint", "    np.divide(lam3, B, out=lam3)\n", "", "adjoint: λ^3"),
    ("read W^2 after its update", "sgd_step", LAM1, "", "sgd_step: W^1 is not"),
    (
        "read a buffer before writing it",
        "loss_and_grad",
        "    np.square(x1, out=g1)\n",
        "",
        "loss_and_grad: ∂L/∂W^1",
    ),
    (
        "W^k for W^{k+1}",
        "adjoint",
        "np.matmul(g3, W3, out=lam2)",
        "np.matmul(g3, W2, out=lam2)",
        "adjoint: λ^1",
    ),
    (
        "drop the bias update",
        "sgd_step",
        "    np.add(b1, gb1, out=b1)\n",
        "",
        "sgd_step: b^1 is not",
    ),
    (
        "change η's sign",
        "sgd_step",
        "np.multiply(gW3, eta, out=gW3)",
        "np.multiply(gW3, (-eta), out=gW3)",
        "sgd_step: W^3",
    ),
    (
        "σ' of another layer",
        "loss_and_grad",
        "np.subtract(1.0, x2, out=t0)",
        "np.subtract(1.0, x1, out=t0)",
        "∂L/∂W^1",
    ),
    ("drop the bias", "forward", "    np.add(x1, b1, out=x1)\n", "", "forward: X^3"),
    (
        "J not divided by B",
        "loss",
        "loss = -np.vdot(Y, t1) / B",
        "loss = -np.vdot(Y, t1)",
        "loss: the loss J",
    ),
]


@pytest.mark.parametrize(
    ("kernel", "old", "new", "message"),
    [m[1:] for m in MUTATIONS],
    ids=[m[0] for m in MUTATIONS],
)
def test_a_mutated_kernel_fails_naming_the_kernel_and_output(
    kernel: str, old: str, new: str, message: str
) -> None:
    """The check runs the source it is given: edit it as a printer bug would, and it fails."""
    model = lbp.compile(MUTANT)
    source = model.kernels[kernel].source
    assert source.count(old) == 1, old
    if old == LAM1:  # move Λ^1 = G^2 W^2 after the update of W^2: it reads the new W^2
        mutated = source.replace(LAM1, "").replace(W2_UPDATE, W2_UPDATE + LAM1)
    else:
        mutated = source.replace(old, new)
    model.kernels[kernel].source = mutated
    report = lbp.verify(model)
    failed = [s for s in report.steps if not s.ok]
    assert [s.label for s in failed] == [kernel], str(report)
    assert message in failed[0].detail, failed[0].detail
    assert str(report).splitlines()[0].endswith(")") and ": NOT PROVEN (" in str(report)


def test_the_unmutated_model_is_proven() -> None:
    assert lbp.verify(lbp.compile(MUTANT)).ok


def test_verify_refuses_what_does_not_apply() -> None:
    model = lbp.compile(MUTANT)
    with pytest.raises(ValueError, match="derivation= applies to a spec"):
        lbp.verify(model, derivation=lbp.derive(lbp.NetworkSpec((1, 1), "identity")))
    with pytest.raises(ValueError, match="trials must be at most 100, got 1000000000"):
        lbp.verify(model, trials=10**9)
    with pytest.raises(TypeError, match=r"verify takes a lagrange_bp\.NetworkSpec or a compiled"):
        lbp.verify("4-5-3")  # type: ignore[arg-type]


def test_cli_verify_compiled(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys,
        "verify",
        "--compiled",
        "--widths",
        "64,128,10",
        "--activations",
        "tanh,softmax",
        "--loss",
        "cross_entropy",
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] and doc["spec"] == "64-128-10, tanh/softmax, cross_entropy"
    assert [s["step"] for s in doc["steps"]] == [
        "forward",
        "loss",
        "adjoint",
        "loss_and_grad",
        "sgd_step",
    ]
    assert "verify: (sgd_step) ok in " in err
    code, out, err = run_cli(capsys, "verify", "--compiled", "--general")
    assert code == 2 and "give --general or --compiled, not both" in err
    code, out, err = run_cli(capsys, "verify", "--trials", "1000000000")
    assert code == 2 and err == (
        "lagrange-bp: error: --trials must be at most 100, got 1000000000: each point multiplies "
        "the chance that a wrong identity survives by about 1e-15, so a few suffice\n"
    )


def test_general_proof_json_names_no_spec(capsys: pytest.CaptureFixture[str]) -> None:
    """It used to print "spec": "1-1, identity, mse", a dummy (issue 10 item 5)."""
    code, out, _ = run_cli(capsys, "verify", "--general", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["spec"] is None
    assert doc["title"] == "General proof (any depth N, any widths n_k, any batch size B)"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX")
def test_ctrl_c_stops_a_long_proof_in_one_line() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lagrange_bp",
            "verify",
            "--compiled",
            "--widths",
            "784,1024,1024,10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONWARNINGS": ""},
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.endswith("lagrange-bp: interrupted\n") and "Traceback" not in err
