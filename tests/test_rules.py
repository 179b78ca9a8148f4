"""check_rule: the user's own derivation, right or wrong (issue 6 items 1 and 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp.cli import main
from lagrange_bp.rules import generic as G

SPECS = [
    lbp.NetworkSpec((3, 4, 5, 2), ("tanh", "sigmoid", "identity"), "mse"),
    lbp.NetworkSpec((4, 6, 3), ("relu", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((2, 5, 3, 3), ("softplus", "z*tanh(softplus(z))", "softmax"), "cross_entropy"),
]
IDS = [s.describe() for s in SPECS]

# CONVENTIONS §1, written by a student who got it right (rows are samples).
RIGHT = {
    "forward": lambda W, b, x_prev, sigma: sigma(x_prev @ W.T + b),
    "adjoint": lambda W_next, z_next, lam_next, dsigma_next: (
        (dsigma_next(z_next) * lam_next) @ W_next
    ),
    "weight_gradient": lambda z, lam, x_prev, dsigma: -(dsigma(z) * lam).T @ x_prev,
    "bias_gradient": lambda z, lam, dsigma: -(dsigma(z) * lam).sum(axis=0),
}
OUTPUT = {
    "mse": lambda x_out, y, batch_size: (y - x_out) / batch_size,
    "cross_entropy": lambda x_out, y, batch_size: y / (batch_size * x_out),
}


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("rule", [*RIGHT, "output_adjoint"])
def test_correct_rules_are_accepted(spec: lbp.NetworkSpec, rule: str) -> None:
    candidate = RIGHT.get(rule) or OUTPUT[spec.loss]
    if rule == "adjoint" and spec.activations == ("relu", "softmax"):
        with pytest.raises(ValueError, match=r"cannot be checked on 4-6-3.*layer 2 is softmax"):
            lbp.check_rule(spec, rule, candidate)
        return
    report = lbp.check_rule(spec, rule, candidate)
    assert report.ok, str(report)
    assert str(report).startswith(f"rule {rule!r} for {spec.describe()}: RIGHT")


WRONG = {
    "adjoint": {
        "sign": lambda W_next, z_next, lam_next, dsigma_next: (
            -(dsigma_next(z_next) * lam_next) @ W_next
        ),
        "missing σ'": lambda W_next, z_next, lam_next, dsigma_next: lam_next @ W_next,
        "σ' at the wrong argument": lambda W_next, z_next, lam_next, dsigma_next: (
            (dsigma_next(lam_next) * lam_next) @ W_next
        ),
        "extra transpose": lambda W_next, z_next, lam_next, dsigma_next: (
            (dsigma_next(z_next) * lam_next) @ W_next.T.T.T
        ),
        "1/B slip": lambda W_next, z_next, lam_next, dsigma_next: (
            (dsigma_next(z_next) * lam_next) @ W_next / len(z_next)
        ),
    },
    "weight_gradient": {
        "sign": lambda z, lam, x_prev, dsigma: (dsigma(z) * lam).T @ x_prev,
        "missing σ'": lambda z, lam, x_prev, dsigma: -lam.T @ x_prev,
        "σ' at the wrong argument": lambda z, lam, x_prev, dsigma: (
            -(dsigma(x_prev[:, :1]) * lam).T @ x_prev
        ),
        "missing transpose": lambda z, lam, x_prev, dsigma: -(x_prev.T @ (dsigma(z) * lam)),
        "1/B slip": lambda z, lam, x_prev, dsigma: -(dsigma(z) * lam).T @ x_prev / len(z),
        "batch sum forgotten": lambda z, lam, x_prev, dsigma: (
            -np.outer(dsigma(z[0]) * lam[0], x_prev[0])
        ),
    },
    "bias_gradient": {
        "sign": lambda z, lam, dsigma: (dsigma(z) * lam).sum(axis=0),
        "1/B slip": lambda z, lam, dsigma: -(dsigma(z) * lam).mean(axis=0),
        "kept dims": lambda z, lam, dsigma: -(dsigma(z) * lam).sum(axis=0, keepdims=True),
    },
    "output_adjoint": {
        "sign": lambda x_out, y, batch_size: (x_out - y) / batch_size,
        "1/B missing": lambda x_out, y, batch_size: y - x_out,
        "1/B twice": lambda x_out, y, batch_size: (y - x_out) / batch_size**2,
    },
    "forward": {
        "W not transposed": lambda W, b, x_prev, sigma: sigma(
            x_prev @ W[:, : x_prev.shape[1]].T[::-1] + b
        ),
        "bias outside σ": lambda W, b, x_prev, sigma: sigma(x_prev @ W.T) + b,
        "raises": lambda W, b, x_prev, sigma: sigma(W @ x_prev),
    },
}
CASES = [(rule, name, fn) for rule, fns in WRONG.items() for name, fn in fns.items()]


@pytest.mark.parametrize(
    ("rule", "slip", "candidate"), CASES, ids=[f"{r}-{n}" for r, n, _ in CASES]
)
def test_wrong_rules_are_rejected(rule: str, slip: str, candidate: object) -> None:
    spec = SPECS[0]
    report = lbp.check_rule(spec, rule, candidate)
    assert not report.ok, f"{slip} was accepted"
    text = str(report)
    assert text.startswith(f"rule {rule!r} for {spec.describe()}: WRONG")
    assert "layer " in report.counterexample
    assert ("expected" in report.counterexample and "got" in report.counterexample) or (
        "raised" in report.counterexample or "returned shape" in report.counterexample
    )


def test_counterexample_names_layer_entry_and_smallest_batch() -> None:
    report = lbp.check_rule(SPECS[0], "output_adjoint", WRONG["output_adjoint"]["1/B missing"])
    lines = report.counterexample.splitlines()
    assert lines[0].startswith("layer 3, batch size 3: entry (sample, unit) = (")
    assert lines[1].startswith("smallest failing input: batch size 2:")  # B = 1 hides 1/B
    assert any(line.strip().startswith("x_out = [[") for line in lines)


def test_a_candidate_that_raises_or_misbehaves_never_crashes_the_checker() -> None:
    def boom(**kwargs: object) -> None:
        raise RuntimeError("my bug")

    report = lbp.check_rule(SPECS[0], "adjoint", boom)
    assert not report.ok and "the candidate raised RuntimeError: my bug" in report.counterexample
    report = lbp.check_rule(SPECS[0], "bias_gradient", lambda **kw: "not a number")
    assert not report.ok and "returned values of dtype <U12" in report.counterexample
    report = lbp.check_rule(SPECS[0], "forward", lambda W, b, x_prev: x_prev)
    assert not report.ok and "raised TypeError" in report.counterexample


def test_softmax_layers_are_skipped_with_a_reason() -> None:
    report = lbp.check_rule(SPECS[1], "weight_gradient", RIGHT["weight_gradient"])
    assert report.ok and report.skipped == [
        "layer 2: softmax's σ' is a Jacobian, not an elementwise dsigma"
    ]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown rule 'backward'; known: forward, output_adjoint"):
        lbp.check_rule(SPECS[0], "backward", RIGHT["forward"])
    with pytest.raises(TypeError, match="candidate must be a callable"):
        lbp.check_rule(SPECS[0], "forward", 42)


SYMBOLIC_RIGHT = {
    "forward": G.sigma(G.W * G.X_prev + G.b * G.ones_row),
    "adjoint": G.W_next.T * G.hadamard(G.dsigma_next(G.Z_next), G.Lam_next),
    "weight_gradient": -G.hadamard(G.Lam, G.dsigma(G.Z)) * G.X_prev.T,
    "bias_gradient": -G.hadamard(G.dsigma(G.Z), G.Lam) * G.ones,
    "output_adjoint": -(G.X - G.Y) / G.B,
}


@pytest.mark.parametrize("rule", list(SYMBOLIC_RIGHT))
def test_symbolic_candidates(rule: str) -> None:
    report = lbp.check_rule(SPECS[0], rule, SYMBOLIC_RIGHT[rule])
    assert report.ok, str(report)
    assert report.method.startswith("symbolic")


SYMBOLIC_WRONG = {
    "sign": ("adjoint", -G.W_next.T * G.hadamard(G.dsigma_next(G.Z_next), G.Lam_next)),
    "missing transpose": ("adjoint", G.W_next * G.hadamard(G.dsigma_next(G.Z_next), G.Lam_next)),
    "another layer's weights": ("adjoint", G.W.T * G.hadamard(G.dsigma(G.Z), G.Lam)),
    "σ' at the wrong argument": (
        "adjoint",
        G.W_next.T * G.hadamard(G.dsigma_next(G.X_next), G.Lam_next),
    ),
    "missing σ'": ("weight_gradient", -G.Lam * G.X_prev.T),
    "1/B slip": ("output_adjoint", -(G.X - G.Y)),
}


@pytest.mark.parametrize(("slip", "case"), SYMBOLIC_WRONG.items(), ids=list(SYMBOLIC_WRONG))
def test_symbolic_wrong_rules_have_counterexamples(slip: str, case: tuple) -> None:
    rule, candidate = case
    report = lbp.check_rule(SPECS[0], rule, candidate)
    assert not report.ok, slip
    assert "expected" in report.counterexample
    assert (
        "counterexample: with n_(k-1) = 2" in report.counterexample
        or "shape" in report.counterexample
    )


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "my_rules.py"
    rules.write_text(
        "def adjoint(W_next, z_next, lam_next, dsigma_next):\n"
        "    return (dsigma_next(z_next) * lam_next) @ W_next\n\n"
        "def adjoint_wrong(W_next, z_next, lam_next, dsigma_next):\n"
        "    return -(dsigma_next(z_next) * lam_next) @ W_next\n"
    )
    base = ["check", "--rule", "adjoint", "--widths", "3,4,2", "--activations", "tanh,sigmoid"]
    assert main([*base, "--candidate", f"{rules}:adjoint"]) == 0
    assert ": RIGHT" in capsys.readouterr().out
    assert main([*base, "--candidate", f"{rules}:adjoint_wrong"]) == 1
    assert "WRONG" in capsys.readouterr().out
    for ref, message in (
        (f"{rules}:nope", "has no function 'nope'"),
        (f"{tmp_path}/none.py:f", "does not exist"),
        ("no_colon", "must be FILE.py:FUNCTION"),
    ):
        assert main([*base, "--candidate", ref]) == 2
        assert message in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    assert main([*base, "--candidate", f"{broken}:f"]) == 2
    assert "importing" in capsys.readouterr().err
