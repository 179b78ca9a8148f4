"""Grading a student's derivation (issue 13): the kind of each slip, both layouts, a grader
the submission cannot fool, partial credit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp.grading import MISTAKES, assert_rule, grade

A1 = lbp.NetworkSpec((3, 4, 2), ("tanh", "sigmoid"), "mse")
A2 = lbp.NetworkSpec((2, 3, 3, 2), "sigmoid", "mse")
A3 = lbp.NetworkSpec((4, 5, 4, 3), ("relu", "tanh", "softmax"), "cross_entropy")


def sig(u: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-u))


# (spec, rule, slip, candidate): every slip a student makes, and the kind it must be named
MUTANTS: list[tuple[lbp.NetworkSpec, str, str, Callable[..., np.ndarray]]] = [
    # forward
    (A1, "forward", "sign", lambda W, b, x_prev, sigma: -sigma(x_prev @ W.T + b)),
    (A1, "forward", "transpose", lambda W, b, x_prev, sigma: sigma(x_prev @ W + b)),
    (A2, "forward", "scale", lambda W, b, x_prev, sigma: 2 * sigma(x_prev @ W.T + b)),
    (A3, "forward", "raised", lambda W, b, x_prev, sigma: sigma(x_prev @ W.T + b) / 0 + []),
    (A3, "forward", "shape", lambda W, b, x_prev, sigma: sigma(x_prev @ W.T + b)[:, :1]),
    (A2, "forward", "other", lambda W, b, x_prev, sigma: x_prev @ W.T + b),  # no σ
    # output adjoint
    (A1, "output_adjoint", "sign", lambda x_out, y, batch_size: (x_out - y) / batch_size),
    (A1, "output_adjoint", "batch_factor", lambda x_out, y, batch_size: y - x_out),
    (
        A2,
        "output_adjoint",
        "batch_factor",
        lambda x_out, y, batch_size: (y - x_out) / batch_size**2,
    ),
    (A2, "output_adjoint", "scale", lambda x_out, y, batch_size: 2 * (y - x_out) / batch_size),
    (A3, "output_adjoint", "sign", lambda x_out, y, batch_size: -y / x_out / batch_size),
    (A3, "output_adjoint", "batch_factor", lambda x_out, y, batch_size: y / x_out),
    (A3, "output_adjoint", "transpose", lambda x_out, y, batch_size: (y / x_out / batch_size).T),
    # adjoint
    (
        A1,
        "adjoint",
        "sign",
        lambda W_next, z_next, lam_next, dsigma_next: -(dsigma_next(z_next) * lam_next) @ W_next,
    ),
    (
        A1,
        "adjoint",
        "missing_derivative",
        lambda W_next, z_next, lam_next, dsigma_next: lam_next @ W_next,
    ),
    (
        A1,
        "adjoint",
        "transpose",
        lambda W_next, z_next, lam_next, dsigma_next: (dsigma_next(z_next) * lam_next) @ W_next.T,
    ),
    (
        A1,
        "adjoint",
        "derivative_argument",
        lambda W_next, z_next, lam_next, dsigma_next: (z_next * (1 - z_next) * lam_next) @ W_next,
    ),
    (
        A2,
        "adjoint",
        "derivative_argument",
        lambda W_next, z_next, lam_next, dsigma_next: (
            (dsigma_next(sig(z_next)) * lam_next) @ W_next
        ),
    ),
    (
        A2,
        "adjoint",
        "batch_factor",
        lambda W_next, z_next, lam_next, dsigma_next: (
            (dsigma_next(z_next) * lam_next) @ W_next / len(z_next)
        ),
    ),
    (
        A3,
        "adjoint",
        "scale",
        lambda W_next, z_next, lam_next, dsigma_next: (
            0.5 * (dsigma_next(z_next) * lam_next) @ W_next
        ),
    ),
    (A3, "adjoint", "raised", lambda W_next, z_next, lam_next, dsigma_next: W_next @ lam_next),
    # weight gradient
    (A1, "weight_gradient", "sign", lambda z, lam, x_prev, dsigma: (dsigma(z) * lam).T @ x_prev),
    (
        A1,
        "weight_gradient",
        "transpose",
        lambda z, lam, x_prev, dsigma: -x_prev.T @ (dsigma(z) * lam),
    ),
    (A1, "weight_gradient", "missing_derivative", lambda z, lam, x_prev, dsigma: -lam.T @ x_prev),
    (
        A2,
        "weight_gradient",
        "batch_factor",
        lambda z, lam, x_prev, dsigma: -(dsigma(z) * lam).T @ x_prev / len(z),
    ),
    (
        A2,
        "weight_gradient",
        "derivative_argument",
        lambda z, lam, x_prev, dsigma: -(dsigma(sig(z)) * lam).T @ x_prev,
    ),
    (
        A3,
        "weight_gradient",
        "scale",
        lambda z, lam, x_prev, dsigma: -3 * (dsigma(z) * lam).T @ x_prev,
    ),
    (
        A3,
        "weight_gradient",
        "shape",
        lambda z, lam, x_prev, dsigma: -(dsigma(z) * lam).T @ x_prev[:, :1],
    ),
    # bias gradient
    (A1, "bias_gradient", "batch_factor", lambda z, lam, dsigma: -(dsigma(z) * lam).mean(axis=0)),
    (A1, "bias_gradient", "sign", lambda z, lam, dsigma: (dsigma(z) * lam).sum(axis=0)),
    (A1, "bias_gradient", "missing_derivative", lambda z, lam, dsigma: -lam.sum(axis=0)),
    (
        A2,
        "bias_gradient",
        "derivative_argument",
        lambda z, lam, dsigma: -(z * (1 - z) * lam).sum(axis=0),
    ),
    (A2, "bias_gradient", "scale", lambda z, lam, dsigma: -0.5 * (dsigma(z) * lam).sum(axis=0)),
    (A3, "bias_gradient", "shape", lambda z, lam, dsigma: -(dsigma(z) * lam)),
    (A3, "bias_gradient", "other", lambda z, lam, dsigma: -(dsigma(z) * lam).sum(axis=0) + 0.01),
]

RIGHT = {
    "forward": lambda W, b, x_prev, sigma: sigma(x_prev @ W.T + b),
    "output_adjoint": None,  # depends on the loss
    "adjoint": lambda W_next, z_next, lam_next, dsigma_next: (
        (dsigma_next(z_next) * lam_next) @ W_next
    ),
    "weight_gradient": lambda z, lam, x_prev, dsigma: -(dsigma(z) * lam).T @ x_prev,
    "bias_gradient": lambda z, lam, dsigma: -(dsigma(z) * lam).sum(axis=0),
}


def test_the_mutation_suite_is_large_and_covers_every_rule() -> None:
    assert len(MUTANTS) >= 30
    assert {rule for _, rule, _, _ in MUTANTS} == set(lbp.rules.RULES)
    assert {spec for spec, _, _, _ in MUTANTS} == {A1, A2, A3}
    assert {slip for _, _, slip, _ in MUTANTS} <= set(MISTAKES)


@pytest.mark.parametrize(
    ("spec", "rule", "slip", "candidate"),
    MUTANTS,
    ids=[f"{rule}-{slip}-{spec.describe().split(',')[0]}" for spec, rule, slip, _ in MUTANTS],
)
def test_each_slip_is_named(
    spec: lbp.NetworkSpec, rule: str, slip: str, candidate: Callable
) -> None:
    report = lbp.check_rule(spec, rule, candidate)
    assert not report.ok
    assert report.mistake == slip, (report.mistake, report.hint, str(report))
    assert report.hint and report.layer is not None
    assert f"mistake: {slip}: " in str(report)


@pytest.mark.parametrize("spec", [A1, A2, A3], ids=["A1", "A2", "A3"])
def test_right_rules_have_no_mistake(spec: lbp.NetworkSpec) -> None:
    for rule, candidate in RIGHT.items():
        if candidate is None:
            continue
        report = lbp.check_rule(spec, rule, candidate)
        assert report.ok and report.mistake is None, str(report)


def test_indices_are_one_based_and_the_layer_is_named() -> None:
    report = lbp.check_rule(A1, "bias_gradient", lambda z, lam, dsigma: -(dsigma(z) * lam).mean(0))
    assert report.layer == 1
    line = report.counterexample.splitlines()[0]
    assert line.startswith("layer 1, batch size 3: entry (i,) = (")
    index = int(line.split("= (")[1].split(",")[0])
    assert 1 <= index <= 4


COLUMNS = {
    "forward": lambda W, b, x_prev, sigma: sigma(W @ x_prev + b),
    "output_adjoint": lambda x_out, y, batch_size: (y - x_out) / batch_size,
    "adjoint": lambda W_next, z_next, lam_next, dsigma_next: (
        W_next.T @ (dsigma_next(z_next) * lam_next)
    ),
    "weight_gradient": lambda z, lam, x_prev, dsigma: -(dsigma(z) * lam) @ x_prev.T,
    "bias_gradient": lambda z, lam, dsigma: -(dsigma(z) * lam).sum(axis=1, keepdims=True),
}


@pytest.mark.parametrize("rule", list(COLUMNS))
def test_rules_written_with_samples_as_columns(rule: str) -> None:
    """Right in the columns layout; in the rows layout the mismatch is named, not a crash
    (the output adjoint acts entry by entry: it is the same in both layouts)."""
    assert lbp.check_rule(A1, rule, COLUMNS[rule], layout="columns").ok
    if rule == "output_adjoint":
        assert lbp.check_rule(A1, rule, COLUMNS[rule]).ok
        return
    wrong_layout = lbp.check_rule(A1, rule, COLUMNS[rule])
    assert not wrong_layout.ok and wrong_layout.mistake == "shape"
    assert "layout='columns'" in wrong_layout.hint
    rows_rule = RIGHT[rule] or (lambda x_out, y, batch_size: (y - x_out) / batch_size)
    back = lbp.check_rule(A1, rule, rows_rule, layout="columns")
    assert not back.ok and "layout='rows'" in back.hint


# --- grade: a submission in its own process ----------------------------------------------------
RIGHT_FILE = """
import numpy as np

def forward(W, b, x_prev, sigma):
    return sigma(x_prev @ W.T + b)

def output_adjoint(x_out, y, batch_size):
    return (y - x_out) / batch_size

def adjoint(W_next, z_next, lam_next, dsigma_next):
    return (dsigma_next(z_next) * lam_next) @ W_next

def weight_gradient(z, lam, x_prev, dsigma):
    return -(dsigma(z) * lam).T @ x_prev

def bias_gradient(z, lam, dsigma):
    return -(dsigma(z) * lam).sum(axis=0)
"""


def _submission(tmp_path: Path, text: str, name: str = "submission.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_right_submission_gets_full_marks(tmp_path: Path) -> None:
    start = time.perf_counter()
    result = grade(A1, _submission(tmp_path, RIGHT_FILE))
    assert time.perf_counter() - start < 30  # the benchmark holds the 5 s target
    assert result.score == result.max_score == 5 and result.first_wrong is None
    assert all(r.ok for r in result.rules.values())


def test_partial_credit_and_the_first_wrong_step(tmp_path: Path) -> None:
    text = RIGHT_FILE.replace("(y - x_out) / batch_size", "(x_out - y) / batch_size")
    text = text.replace(".sum(axis=0)", ".mean(axis=0)")
    result = grade(A1, _submission(tmp_path, text), points={"bias_gradient": 2})
    assert result.score == 3 and result.max_score == 6
    assert result.first_wrong == "output_adjoint"
    assert result.rules["output_adjoint"].mistake == "sign"
    assert result.rules["bias_gradient"].mistake == "batch_factor"
    data = json.loads(result.to_json())
    assert data["score"] == 3 and data["rules"]["bias_gradient"]["points"] == 0
    assert "first wrong step: output_adjoint" in str(result)


HOSTILE = {
    "exit at import": "import sys\nsys.exit(0)\n",
    "os._exit in a rule": RIGHT_FILE + "\nimport os\ndef forward(**kw):\n    os._exit(0)\n",
    "infinite loop": RIGHT_FILE + "\ndef forward(**kw):\n    while True:\n        pass\n",
    "prints RIGHT": RIGHT_FILE
    + "\nprint('RIGHT 5 / 5 points')\ndef forward(**kw):\n    print('RIGHT')\n    return 0\n",
    "patches numpy": RIGHT_FILE + "\nnp.allclose = lambda *a, **k: True\n"
    "np.isclose = lambda a, b, **k: np.ones(np.shape(a), bool)\n"
    "def forward(W, b, x_prev, sigma):\n    return np.zeros((len(x_prev), len(b)))\n",
    "patches lagrange_bp": RIGHT_FILE
    + "\nimport lagrange_bp.grading as g\ng.judge = lambda *a, **k: g.Verdict(True)\n"
    "g._close = lambda *a: True\n"
    "def forward(W, b, x_prev, sigma):\n    return np.zeros((len(x_prev), len(b)))\n",
    "reads the caller": RIGHT_FILE + "\nimport inspect\ndef forward(W, b, x_prev, sigma):\n"
    "    for f in inspect.stack():\n"
    "        for k in ('expected', 'want', 'e'):\n"
    "            if k in f.frame.f_locals:\n                return f.frame.f_locals[k]\n"
    "    return np.zeros((len(x_prev), len(b)))\n",
    "forges the results": RIGHT_FILE
    + "\nimport sys, json, numpy\ndef forward(W, b, x_prev, sigma):\n"
    "    folder = sys.argv[1]\n"
    "    open(folder + '/done', 'w').close()\n"
    "    numpy.savez(folder + '/results.npz')\n"
    "    open(folder + '/errors.json', 'w').write('{}')\n"
    "    import os; os._exit(0)\n",
    "eats memory": RIGHT_FILE + "\ndef forward(**kw):\n    return bytearray(8 * 2**30)\n",
}


@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_submission_cannot_pass_forward(body: str, tmp_path: Path) -> None:
    start = time.perf_counter()
    result = grade(A1, _submission(tmp_path, body), timeout=5)
    assert time.perf_counter() - start < 30
    assert result.rules["forward"].ok is False, str(result)
    assert result.score < result.max_score


def test_the_cli_grades_and_checks_in_another_process(tmp_path: Path) -> None:
    sub = _submission(tmp_path, RIGHT_FILE.replace(".sum(axis=0)", ".mean(axis=0)"))
    base = [sys.executable, "-m", "lagrange_bp", "grade", str(sub), "--widths", "3,4,2"]
    done = subprocess.run(
        [*base, "--activations", "tanh,sigmoid", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["score"] == 4 and data["rules"]["bias_gradient"]["mistake"] == "batch_factor"
    text = subprocess.run(
        [*base, "--activations", "tanh,sigmoid"], capture_output=True, text=True, check=False
    )
    assert "4 / 5 points" in text.stdout and "[batch_factor]" in text.stdout
    forged = _submission(tmp_path, HOSTILE["forges the results"], "forged.py")
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "lagrange_bp",
            "check",
            "--rule",
            "forward",
            "--candidate",
            f"{forged}:forward",
            "--widths",
            "3,4,2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 1 and "WRONG" in check.stdout, (check.stdout, check.stderr)


def test_assert_rule_for_autograded_cells(capsys: pytest.CaptureFixture[str]) -> None:
    assert assert_rule(A1, "forward", RIGHT["forward"], points=2) == 2
    assert "forward: RIGHT (2/2)" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="batch_factor"):
        assert_rule(A1, "bias_gradient", lambda z, lam, dsigma: -(dsigma(z) * lam).mean(0))
    out = capsys.readouterr().out
    assert "bias_gradient: WRONG (0/1)" in out and "the 1/B of the mean" in out


def test_a_module_is_graded_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _submission(tmp_path, RIGHT_FILE, "student_rules.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    import student_rules  # type: ignore[import-not-found]

    assert grade(A1, student_rules).score == 5


def test_bad_grade_arguments(tmp_path: Path) -> None:
    sub = _submission(tmp_path, RIGHT_FILE)
    with pytest.raises(ValueError, match=r"existing \.py file"):
        grade(A1, tmp_path / "none.py")
    with pytest.raises(ValueError, match="layout"):
        grade(A1, sub, layout="diagonal")
    with pytest.raises(ValueError, match="unknown rules"):
        grade(A1, sub, points={"backward": 1})
    with pytest.raises(ValueError, match="timeout"):
        grade(A1, sub, timeout=0)
    broken = grade(A1, _submission(tmp_path, "def forward(:\n", "broken.py"))
    assert broken.score == 0 and "SyntaxError" in broken.rules["forward"].hint
    missing = grade(
        A1, _submission(tmp_path, "def forward(W, b, x_prev, sigma):\n    return 0\n", "partial.py")
    )
    assert "defines no function 'adjoint'" in missing.rules["adjoint"].hint


# --- symbolic candidates: equivalent forms pass, slips are named ------------------------------
S = lbp.rules.generic
SIGMOID = lbp.NetworkSpec((3, 4, 2), "sigmoid", "mse")
TANH = lbp.NetworkSpec((3, 4, 2), "tanh", "mse")
CE = lbp.NetworkSpec((3, 4, 3), ("tanh", "softmax"), "cross_entropy")
H = S.hadamard


def _ones_minus(M: sp.MatrixExpr) -> sp.MatrixExpr:
    return sp.OneMatrix(*M.shape) - M


EQUIVALENT = {
    "Hadamard order": (A1, "adjoint", S.W_next.T * H(S.Lam_next, S.dsigma_next(S.Z_next))),
    "transpose of a product": (
        A1,
        "adjoint",
        (H(S.dsigma_next(S.Z_next), S.Lam_next).T * S.W_next).T,
    ),
    "weight gradient, product transposed": (
        A1,
        "weight_gradient",
        -(S.X_prev * H(S.Lam, S.dsigma(S.Z)).T).T,
    ),
    "weight gradient, minus inside": (
        A1,
        "weight_gradient",
        H(-S.Lam, S.dsigma(S.Z)) * S.X_prev.T,
    ),
    "bias gradient, ones transposed": (
        A1,
        "bias_gradient",
        -(S.ones_row.T.T * H(S.dsigma(S.Z), S.Lam).T).T,
    ),
    "bias gradient, sum of two halves": (
        A1,
        "bias_gradient",
        -H(S.dsigma(S.Z), S.Lam) * S.ones / 2 - H(S.Lam, S.dsigma(S.Z)) * S.ones / 2,
    ),
    "forward, bias first": (A1, "forward", S.sigma(S.b * S.ones_row + S.W * S.X_prev)),
    "output adjoint, Y first": (A1, "output_adjoint", (S.Y - S.X) / S.B),
    "output adjoint, split": (A1, "output_adjoint", S.Y / S.B - S.X / S.B),
    "cross-entropy, Y ⊘ X": (CE, "output_adjoint", H(S.Y, sp.HadamardPower(S.X, -1)) / S.B),
    "sigmoid σ' in X": (
        SIGMOID,
        "adjoint",
        S.W_next.T * H(S.X_next, _ones_minus(S.X_next), S.Lam_next),
    ),
    "tanh σ' in X": (
        TANH,
        "weight_gradient",
        -H(_ones_minus(H(S.X, S.X)), S.Lam) * S.X_prev.T,
    ),
    "sigmoid σ' in X, bias": (
        SIGMOID,
        "bias_gradient",
        -H(S.X, _ones_minus(S.X), S.Lam) * S.ones,
    ),
}


def _d_next() -> sp.MatrixExpr:
    return S.dsigma_next(S.Z_next)


SLIPS = {
    "sign, adjoint": (A1, "adjoint", "sign", -S.W_next.T * H(_d_next(), S.Lam_next)),
    "sign, bias": (A1, "bias_gradient", "sign", H(S.dsigma(S.Z), S.Lam) * S.ones),
    "sign, output": (A1, "output_adjoint", "sign", (S.X - S.Y) / S.B),
    "1/B missing": (A1, "output_adjoint", "batch_factor", S.Y - S.X),
    "1/B twice": (A1, "bias_gradient", "batch_factor", -H(S.dsigma(S.Z), S.Lam) * S.ones / S.B),
    "W not transposed": (A1, "adjoint", "transpose", S.W_next * H(_d_next(), S.Lam_next)),
    "gradient transposed": (
        A1,
        "weight_gradient",
        "transpose",
        -S.X_prev * H(S.dsigma(S.Z), S.Lam).T,
    ),
    "forward with Wᵀ": (A1, "forward", "transpose", S.sigma(S.W.T * S.X_prev + S.b * S.ones_row)),
    "σ' dropped, adjoint": (A1, "adjoint", "missing_derivative", S.W_next.T * S.Lam_next),
    "σ' dropped, gradient": (A1, "weight_gradient", "missing_derivative", -S.Lam * S.X_prev.T),
    "σ' of X": (
        A1,
        "adjoint",
        "derivative_argument",
        S.W_next.T * H(S.dsigma_next(S.X_next), S.Lam_next),
    ),
    "σ' of X, bias": (
        A1,
        "bias_gradient",
        "derivative_argument",
        -H(S.dsigma(S.X), S.Lam) * S.ones,
    ),
    "layer k for k+1": (A1, "adjoint", "wrong_layer", S.W.T * H(S.dsigma(S.Z), S.Lam)),
    "factor 2": (A1, "output_adjoint", "scale", 2 * (S.Y - S.X) / S.B),
    "factor ½": (A1, "weight_gradient", "scale", -H(S.dsigma(S.Z), S.Lam) * S.X_prev.T / 2),
}


@pytest.mark.parametrize(("spec", "rule", "candidate"), EQUIVALENT.values(), ids=list(EQUIVALENT))
def test_equivalent_symbolic_forms_are_right(
    spec: lbp.NetworkSpec, rule: str, candidate: sp.MatrixExpr
) -> None:
    report = lbp.check_rule(spec, rule, candidate)
    assert report.ok, str(report)
    assert report.mistake is None and "normal forms differ" not in report.method


@pytest.mark.parametrize(("spec", "rule", "slip", "candidate"), SLIPS.values(), ids=list(SLIPS))
def test_symbolic_slips_are_named(
    spec: lbp.NetworkSpec, rule: str, slip: str, candidate: sp.MatrixExpr
) -> None:
    report = lbp.check_rule(spec, rule, candidate)
    assert not report.ok and report.mistake == slip, (report.mistake, str(report))
    assert report.hint


def test_the_symbolic_suites_are_large_enough() -> None:
    assert len(EQUIVALENT) >= 12 and len(SLIPS) >= 12


def test_the_package_s_own_forms_are_right_exactly() -> None:
    """The derived rule itself, and the rule as notebook 01 prints it, pass without a caveat."""
    for rule in lbp.rules.RULES:
        report = lbp.check_rule(A1, rule, lbp.rules.expected_generic(A1, rule))
        assert report.ok and report.method == "symbolic, generic layer, σ abstract"
