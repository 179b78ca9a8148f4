"""Weight decay for graphs: J + (α/2) Σ ‖W‖² over every weight matrix, each shared set once.

The decay is one more piece of the Lagrangian (``lagrangian.pieces``, origin "weight decay"),
so the one engine derives ∂L/∂W = Σ_uses + α W for a graph as for a chain; the proofs, the
kernels and ``verify(model)`` carry it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import run_cli
from graph_cases import shared, torch_autograd, two_skips

import lagrange_bp as lbp
from lagrange_bp import checkpoint
from lagrange_bp.graph_render import render
from lagrange_bp.graph_verify import verify_graph
from lagrange_bp.lagrangian import ALPHA, DECAY

RNN = lbp.recurrent(inputs=1, hidden=2, outputs=1, steps=3, weight_decay=0.1)
GRAPHS = {
    "rnn-T3": RNN,
    "rnn-T1": lbp.recurrent(inputs=2, hidden=2, outputs=1, steps=1, weight_decay=0.3),
    "shared": dataclasses.replace(shared(), weight_decay=0.25),
    "two-skips": dataclasses.replace(two_skips(), weight_decay=1e-3),
}


def _weights(spec: lbp.GraphSpec) -> list[str]:
    return [w for first in spec.groups.values() for w in first.weight_names]


@pytest.mark.parametrize("name", ["rnn-T3", "shared"])
def test_each_weight_gradient_gains_alpha_w_once_and_nothing_else(name: str) -> None:
    spec = GRAPHS[name]
    d, plain = lbp.derive(spec), lbp.derive(dataclasses.replace(spec, weight_decay=0.0))
    weights = {w for name in _weights(spec) for w in d.params[name]}
    assert weights and d.forward == plain.forward and d.adjoint == plain.adjoint
    for p, g in d.gradients.items():
        extra = ALPHA * p if p in weights else 0
        assert sp.expand(g - plain.gradients[p] - extra) == 0, p
        assert (DECAY in d.gradient_terms[p]) == (p in weights)  # once, however many uses
    penalty = sum(ALPHA / 2 * w**2 for w in weights)
    assert sp.expand(d.lagrangian - plain.lagrangian - penalty) == 0


def test_the_derivation_prints_the_decay_in_every_format() -> None:
    d = lbp.derive(RNN)
    text = str(d)
    assert "weight decay 0.1" in text.splitlines()[0]
    assert "L = ℓ(y, (o3)) + (α/2) Σ ‖W‖² + Σ_v λ^vᵀ (x_v − f_v)" in text
    assert "(weight decay: cell.W1[1,1]*α)" in text
    latex = render(d, "latex")
    assert r"\frac{\alpha}{2} \sum \lVert W \rVert^2" in latex
    assert r"_{\text{weight decay}}" in latex and "α" not in latex.split("graph:")[1]
    terms = json.loads(render(d, "json"))["gradients"][0]["terms"]
    assert terms[-1]["use"] == "weight decay" and "alpha" in terms[-1]["latex"]


def test_the_graph_keeps_alpha_in_json_describe_and_checks_it() -> None:
    assert lbp.graph_from_json(RNN.to_json()) == RNN
    assert json.loads(RNN.to_json())["weight_decay"] == 0.1
    assert "weight_decay" not in json.loads(two_skips().to_json())  # files without it still read
    assert RNN.decay == sp.Rational(1, 10) and RNN.describe().endswith("mse, weight decay 0.1")
    for alpha, error in ((-1, ValueError), (float("nan"), ValueError), (True, TypeError)):
        with pytest.raises(error, match="weight_decay must be"):
            dataclasses.replace(RNN, weight_decay=alpha)
    doc = json.loads(RNN.to_json()) | {"weight_decay": "0.1"}
    with pytest.raises(TypeError, match="weight_decay must be a number"):
        lbp.graph_from_json(json.dumps(doc))


@pytest.mark.parametrize("name", ["rnn-T3", "shared"])
def test_both_proofs_hold_with_the_decay(name: str) -> None:
    spec = GRAPHS[name]
    report = lbp.verify(spec)
    assert report.ok, str(report)
    assert "+ (α/2) Σ ‖W‖², for every α" in report.steps[2].claim
    general = lbp.verify_graph_general([spec])
    assert general.ok, str(general)
    assert "α W, once per matrix" in general.steps[3].claim


def test_a_derivation_without_the_decay_fails_step_c() -> None:
    plain = lbp.derive(dataclasses.replace(RNN, weight_decay=0.0))
    report = verify_graph(RNN, derivation=dataclasses.replace(plain, spec=RNN))
    assert not report.ok and [s.label for s in report.steps if not s.ok] == ["c"]


@pytest.mark.parametrize("name", list(GRAPHS))
def test_the_kernels_are_proven_with_the_decay(name: str) -> None:
    model = lbp.compile(GRAPHS[name])
    report = lbp.verify(model)
    assert report.ok, str(report)
    src = model.source("sgd_step")
    assert "J += (α/2) Σ ‖W‖²" in src and "(weight decay)" in src


def test_the_decay_alone_updates_a_weight_no_use_reaches() -> None:
    """At T = 1, W_h reads only h0 = 0: its gradient is α W_h alone (printed as a scalar
    factor (1 − ηα), which the printer once wrote without the parentheses its sum needs)."""
    model = lbp.compile(GRAPHS["rnn-T1"])
    rng = np.random.default_rng(0)
    params = model.init_params(seed=2)
    X, Y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    W1 = params["cell.W1"].copy()
    model.sgd_step(params, X, Y, 0.5)
    np.testing.assert_allclose(params["cell.W1"], (1 - 0.5 * 0.3) * W1, rtol=1e-15)


@pytest.mark.parametrize("name", ["rnn-T3", "shared", "two-skips"])
def test_gradients_and_ten_sgd_steps_equal_torch(name: str) -> None:
    """loss_and_grad against torch autograd plus α W, and ten sgd_steps against
    torch.optim.SGD with weight_decay=α on the weights (biases in a group without decay)."""
    torch = pytest.importorskip("torch")
    spec = GRAPHS[name]
    alpha, model = spec.weight_decay, lbp.compile(spec)
    params = model.init_params(seed=3)
    rng = np.random.default_rng(1)
    n_y = sum(spec.output_widths)

    def batch() -> tuple[np.ndarray, np.ndarray]:
        X = rng.normal(size=(6, sum(spec.input_widths)))
        if spec.loss == "cross_entropy":
            return X, np.eye(n_y)[rng.integers(0, n_y, 6)]
        return X, rng.normal(size=(6, n_y))

    X, Y = batch()
    J, grads = model.loss_and_grad(params, X, Y)
    J_t, grads_t, _, _ = torch_autograd(spec, params, X, Y)
    weights = set(_weights(spec))
    norms = sum(float(np.vdot(params[w], params[w])) for w in weights)
    assert J == pytest.approx(J_t + alpha / 2 * norms, rel=1e-12)
    for k, g in grads.items():
        expected = grads_t[k] + (alpha * params[k] if k in weights else 0)
        np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-13)
    theta = {k: torch.tensor(v.copy()) for k, v in params.items()}
    opt = torch.optim.SGD(
        [
            {"params": [theta[k] for k in theta if k in weights], "weight_decay": alpha},
            {"params": [theta[k] for k in theta if k not in weights], "weight_decay": 0.0},
        ],
        lr=0.2,
    )
    for _ in range(10):
        X, Y = batch()
        _, g_t, _, _ = torch_autograd(spec, {k: t.numpy() for k, t in theta.items()}, X, Y)
        for k, t in theta.items():
            t.grad = torch.tensor(g_t[k])
        opt.step()
        model.sgd_step(params, X, Y, 0.2)
    gap = max(float(np.max(np.abs(params[k] - t.numpy()))) for k, t in theta.items())
    assert gap < 1e-12


def test_cli_derives_verifies_and_trains_a_decayed_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "verify", "--recurrent", "--weight-decay", "0.1")
    assert code == 0 and "weight decay 0.1: PROVEN" in out, err
    code, out, err = run_cli(capsys, "derive", "--recurrent", "--steps", "2", "--weight-decay", "1")
    assert code == 0 and "(weight decay: cell.W0[1,1]*α)" in out, err
    code, out, err = run_cli(capsys, "verify", "--recurrent", "--weight-decay", "-1")
    assert code == 2 and "--weight-decay: weight_decay must be a finite number" in err
    path = tmp_path / "rnn.json"
    path.write_text(lbp.recurrent(1, 2, 1, 3, weight_decay=0.25).to_json())
    saved = tmp_path / "rnn.npz"
    argv = ("train", "--dataset", "sine", "--graph", str(path), "--epochs", "1")
    code, out, err = run_cli(capsys, *argv, "--save", str(saved))
    assert code == 0, err
    assert checkpoint.load(saved)[0].weight_decay == 0.25  # the file's own α
    code, out, err = run_cli(capsys, *argv, "--weight-decay", "0", "--save", str(saved))
    assert code == 0 and checkpoint.load(saved)[0].weight_decay == 0.0  # the option replaces it


@pytest.mark.parametrize(
    "expr",
    ["1 - 3*eta/10", "(1 - eta)/(B*eta)", "2*(1 + eta)/B", "-eta/(B + 1)", "eta/B**2", "-B - eta"],
)
def test_the_kernel_printer_writes_a_scalar_expression_python_reads_back(expr: str) -> None:
    """Scalar factors in B and η print as Python that evaluates to them (sums and products
    under a fraction bar in parentheses)."""
    from lagrange_bp.codegen import Buffers, KernelPrinter

    B, eta = sp.symbols("B eta", positive=True)
    e = sp.sympify(expr, locals={"B": B, "eta": eta})
    printer = KernelPrinter({}, Buffers(), {})
    text = printer.scalar(e)
    assert eval(text, {"B": 7.0, "eta": 0.3}) == pytest.approx(float(e.subs({B: 7, eta: 0.3})))


def test_bptt_for_any_t_reads_the_decay_term_of_each_weight() -> None:
    """Read off the exact derivations at T = 3 and 4, as without decay: + α W for W_x, W_h, V,
    nothing for the biases b, c."""
    from lagrange_bp.graph_render import bptt

    text = bptt(dict(inputs=1, hidden=2, outputs=1, steps=5, weight_decay=0.1))
    rows = {line.split(" = ")[0].strip(): line for line in text.splitlines() if "∂L/∂" in line}
    for role in ("W_x", "W_h", "V"):
        assert (
            rows[f"∂L/∂{role}"].endswith(f"+ α {role}")
            or f"+ α {role}  (no t = 1" in rows[f"∂L/∂{role}"]
        )
    assert "α" not in rows["∂L/∂b"] and "α" not in rows["∂L/∂c"]
    assert "Backpropagation through time" in str(lbp.derive(RNN))
