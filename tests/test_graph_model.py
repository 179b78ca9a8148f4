"""Compiled graphs (``lbp.compile(graph_spec)``): the generated kernels against PyTorch autograd
(rtol 1e-10, float64), central finite differences and float32; training on the sequence
datasets; checkpoints; the exact proof of the kernels; the CLI; bad inputs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from graph_cases import shared, three_consumers, torch_autograd, two_skips

import lagrange_bp as lbp
from lagrange_bp import checkpoint
from lagrange_bp.cli import main
from lagrange_bp.datasets import load
from lagrange_bp.sequences import generate

BATCH = 5


SPECS = {
    "two-skips": two_skips,
    "three-consumers": three_consumers,
    "shared": shared,
    **{
        f"rnn-T{t}-{at}": (lambda t=t, at=at: lbp.recurrent(2, 3, 2, t, outputs_at=at))
        for t in (1, 2, 3, 5, 8, 12)
        for at in ("last", "every")
    },
}
TORCH_ACTS = {"tanh", "sigmoid", "identity", "relu", "softmax", "softplus"}


def data(spec: lbp.GraphSpec, rng: np.random.Generator, n: int = BATCH) -> tuple:
    X = rng.normal(size=(n, sum(spec.input_widths)))
    if spec.loss != "cross_entropy":
        return X, rng.normal(size=(n, sum(spec.output_widths)))
    Y = np.concatenate(
        [np.eye(w)[rng.integers(0, w, n)] for w in spec.output_widths], axis=1
    )  # one one-hot block per output
    return X, Y


def point(name: str, seed: int = 16) -> tuple:
    spec = SPECS[name]()
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(scale=0.8, size=s) for k, s in spec.param_shapes().items()}
    return spec, params, *data(spec, rng)


@pytest.mark.parametrize("name", list(SPECS))
def test_kernels_match_torch_autograd(name: str) -> None:
    """Loss, forward, every gradient, λ_v = −∂J/∂x_v and one SGD step, rtol 1e-10."""
    spec, params, X, Y = point(name)
    model = lbp.compile(spec)
    J_t, grads_t, dJdx, out_t = torch_autograd(spec, params, X, Y)
    J, grads = model.loss_and_grad(params, X, Y)
    assert set(grads) == set(spec.param_shapes())
    np.testing.assert_allclose(J, J_t, rtol=1e-10)
    np.testing.assert_allclose(model.loss(params, X, Y), J_t, rtol=1e-10)
    np.testing.assert_allclose(model.forward(params, X), out_t, rtol=1e-10, atol=1e-14)
    for k, g in grads_t.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-10, atol=1e-14, err_msg=k)
    lams = model.adjoint(params, X, Y)
    assert set(lams) == {n.name for n in spec.nodes if n.op in ("layer", "add")}
    for v, lam in lams.items():
        np.testing.assert_allclose(lam, -dJdx[v], rtol=1e-10, atol=1e-14, err_msg=v)
    stepped = {k: v.copy() for k, v in params.items()}
    assert model.sgd_step(stepped, X, Y, 0.1) == pytest.approx(J_t, rel=1e-10)
    for k, g in grads_t.items():
        np.testing.assert_allclose(stepped[k], params[k] - 0.1 * g, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["two-skips", "three-consumers", "shared", "rnn-T5-every"])
def test_gradients_match_central_differences(name: str) -> None:
    spec, params, X, Y = point(name, seed=3)
    model = lbp.compile(spec)
    _, grads = model.loss_and_grad(params, X, Y)
    h = 1e-5
    for k, a in params.items():
        fd = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            up, down = {**params, k: a.copy()}, {**params, k: a.copy()}
            up[k][i] += h
            down[k][i] -= h
            fd[i] = (model.loss(up, X, Y) - model.loss(down, X, Y)) / (2 * h)
        err = np.linalg.norm(grads[k] - fd) / max(np.linalg.norm(fd), 1e-12)
        assert err < 1e-7, (k, err)


@pytest.mark.parametrize("name", ["two-skips", "rnn-T8-every"])
def test_float32_is_close_to_float64(name: str) -> None:
    spec, params, X, Y = point(name)
    J64, g64 = lbp.compile(spec).loss_and_grad(params, X, Y)
    m32 = lbp.compile(spec, dtype="float32")
    J32, g32 = m32.loss_and_grad({k: v.astype(np.float32) for k, v in params.items()}, X, Y)
    assert all(g.dtype == np.float32 for g in g32.values())
    assert J32 == pytest.approx(J64, rel=2e-3)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=2e-3, atol=2e-4)


def test_chain_graph_gives_the_mlp_kernels_results() -> None:
    """A graph that is a chain computes what the MLP model computes, step for step."""
    g = lbp.Graph(inputs=4)
    h = g.layer(g.inputs[0], 6, "tanh", name="l1")
    graph = lbp.compile(g.output(g.layer(h, 3, "softmax", name="l2"), loss="cross_entropy"))
    mlp = lbp.compile(lbp.NetworkSpec((4, 6, 3), ("tanh", "softmax"), "cross_entropy"))
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(7, 4)), np.eye(3)[rng.integers(0, 3, 7)]
    p = mlp.init_params(0)
    gp = {"l1.W": p[0][0], "l1.b": p[0][1], "l2.W": p[1][0], "l2.b": p[1][1]}
    J, grads = mlp.loss_and_grad(p, X, Y)
    Jg, gg = graph.loss_and_grad(gp, X, Y)
    assert Jg == pytest.approx(J, rel=1e-12)
    np.testing.assert_allclose(gg["l1.W"], grads[0][0], rtol=1e-12)


def test_kernel_source_names_the_sums() -> None:
    model = lbp.compile(SPECS["rnn-T3-last"]())
    src = model.source("sgd_step")
    assert "# ∂L/∂cell.W1 += −G^h2ᵀ X^h1 (use h2)" in src
    assert "cell.W1 ← cell.W1 − η ∂L/∂cell.W1 (summed over its 3 uses)" in src
    assert "(h0 = 0 drops out)" in src
    res = lbp.compile(two_skips()).source("adjoint")
    assert "# Λ^s1 = G^h3 h3.W (from h3) + Λ^s2 (from s2)" in res
    assert "Λ^h3 = Λ^s2 (from s2): the same array" in res
    assert model.equations() and "GraphModel" in repr(model)


@pytest.mark.parametrize("name", ["two-skips", "three-consumers", "shared", "rnn-T3-every"])
def test_verify_proves_the_graph_kernels(name: str) -> None:
    report = lbp.verify(lbp.compile(SPECS[name]()))
    assert report.ok, str(report)
    assert [s.label for s in report.steps] == [
        "forward",
        "loss",
        "adjoint",
        "loss_and_grad",
        "sgd_step",
    ]


def test_verify_catches_an_edited_kernel() -> None:
    model = lbp.compile(SPECS["rnn-T3-last"]())
    kernel = model.kernels["loss_and_grad"]
    line = "np.subtract(d_W1_cell, acc_3x3, out=d_W1_cell)"
    assert line in kernel.source
    kernel.source = kernel.source.replace(line, line.replace("subtract", "add"))
    report = lbp.verify(model)
    assert not report.ok
    assert "∂L/∂cell.W1" in str(report)


def test_training_on_the_adding_problem_reduces_the_loss() -> None:
    """Below the 1/12 of always predicting the mean sum, 1."""
    d = load("adding", steps=10)
    model = lbp.compile(lbp.recurrent(2, 16, 1, 10))
    result = lbp.train(
        model, d.X_train, d.Y_train, epochs=30, lr=0.1, validation=(d.X_test, d.Y_test)
    )
    assert result.history["train_loss"][0] > 0.1
    assert result.history["val_loss"][-1] < 0.05
    assert lbp.evaluate(model, result.params, d.X_test, d.Y_test)["loss"] < 0.05


def test_training_on_sine_every_step_reduces_the_loss() -> None:
    d = load("sine", steps=8, outputs_at="every")
    model = lbp.compile(lbp.recurrent(1, 12, 1, 8, outputs_at="every"))
    result = lbp.train(model, d.X_train, d.Y_train, epochs=15, lr=0.05, seed=1, optimizer="adam")
    first, last = result.history["train_loss"][0], result.history["train_loss"][-1]
    assert last < 0.3 * first and last < 0.08  # J summed over the 8 steps


def test_training_resumes_exactly_and_keeps_the_caller_params() -> None:
    spec = SPECS["shared"]()
    model = lbp.compile(spec)
    X, Y = data(spec, np.random.default_rng(0), 64)
    start = model.init_params(3)
    kept = {k: v.copy() for k, v in start.items()}
    whole = lbp.train(model, X, Y, epochs=4, batch_size=16, params=start, optimizer="adam", lr=0.01)
    first = lbp.train(model, X, Y, epochs=2, batch_size=16, params=start, optimizer="adam", lr=0.01)
    rest = lbp.train(model, X, Y, epochs=2, batch_size=16, params=first.params,
                     resume=first.state, optimizer="adam", lr=0.01)  # fmt: skip
    for k in start:
        np.testing.assert_array_equal(start[k], kept[k])
        np.testing.assert_array_equal(rest.params[k], whole.params[k])
    assert "val_accuracy" not in whole.history


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    spec = SPECS["rnn-T3-every"]()
    model = lbp.compile(spec)
    X, Y = data(spec, np.random.default_rng(0), 40)
    result = lbp.train(model, X, Y, epochs=2, batch_size=8, optimizer="momentum", lr=0.01)
    path = checkpoint.save(tmp_path / "rnn.npz", spec, result.params, {"note": "x"}, result.state)
    loaded, params, info = checkpoint.load(path)
    assert loaded == spec and info["note"] == "x"
    for k in params:
        np.testing.assert_array_equal(params[k], result.params[k])
    state = info["training_state"]
    more = lbp.train(model, X, Y, epochs=1, batch_size=8, optimizer="momentum", lr=0.01,
                     params=params, resume=state)  # fmt: skip
    assert more.history["epoch"] == [3.0]
    raw = dict(np.load(path))
    raw["p0"] = raw["p0"] + 1.0
    np.savez(tmp_path / "bad.npz", **raw)
    with pytest.raises(lbp.CheckpointError, match="checksum"):
        checkpoint.load(tmp_path / "bad.npz")


def test_sequence_datasets() -> None:
    X, Y = generate("adding", seed=1, steps=6, samples=50)
    assert X.shape == (50, 12) and Y.shape == (50, 1)
    assert (X[:, 1::2].sum(axis=1) == 2).all()  # two markers per sequence
    np.testing.assert_allclose(Y[:, 0], (X[:, 0::2] * X[:, 1::2]).sum(axis=1))
    X2, _ = generate("adding", seed=1, steps=6, samples=50)
    np.testing.assert_array_equal(X, X2)
    X, Y = generate("sine", seed=0, steps=5, samples=20, outputs_at="every")
    assert X.shape == (20, 5) and Y.shape == (20, 5)
    np.testing.assert_array_equal(X[:, 1:], Y[:, :-1])
    with pytest.raises(ValueError, match="one target per sequence"):
        generate("adding", outputs_at="every")
    with pytest.raises(ValueError, match="steps"):
        load("sine", steps=0)
    with pytest.raises(ValueError, match="options of the sequence datasets"):
        load("iris", steps=4)


def test_bad_inputs_give_clear_errors() -> None:
    spec = SPECS["two-skips"]()
    model = lbp.compile(spec)
    params = model.init_params(0)
    X, Y = data(spec, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"missing \['h1.W'\]"):
        model.loss({k: v for k, v in params.items() if k != "h1.W"}, X, Y)
    with pytest.raises(ValueError, match=r"h2\.W must have shape"):
        model.loss({**params, "h2.W": np.zeros((2, 2))}, X, Y)
    with pytest.raises(TypeError, match="dict name → array"):
        model.loss(list(params.values()), X, Y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"X must have shape \(B, 3\)"):
        model.forward(params, X[:, :2])
    with pytest.raises(ValueError, match="columns of output 'out' must sum to 1"):
        model.loss(params, X, Y * 2)
    with pytest.raises(ValueError, match="NaN"):
        model.loss(params, X * np.nan, Y)
    with pytest.raises(ValueError, match="must already be a C-contiguous"):
        model.sgd_step({**params, "h1.W": params["h1.W"].astype(np.float32)}, X, Y, 0.1)
    with pytest.raises(ValueError, match="unknown kernel"):
        model.source("backward")
    with pytest.raises(ValueError, match="batch_size"):
        lbp.train(model, X, Y, batch_size=0)


class Utf8(io.StringIO):
    """A captured stream that says it is UTF-8, as a terminal's is (the CLI writes ASCII
    to a stream of another encoding)."""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lagrange-bp args…`` run in this process from ``cwd`` (the CLI's own subprocess tests
    are in test_cli.py and test_bad_input.py): its exit status, stdout and stderr."""
    out, err, old = Utf8(), Utf8(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's own errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_cli_train_recurrent_and_graph(tmp_path: Path) -> None:
    done = run_cli("train", "--dataset", "adding", "--recurrent", "--hidden", "8", "--steps", "6",
                   "--epochs", "3", "--save", "rnn.npz", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cell tanh 8 ×6 shared" in done.stdout
    done = run_cli("evaluate", "--model", "rnn.npz", cwd=tmp_path)
    assert done.returncode == 0 and "adding (T = 6)" in done.stdout, done.stderr
    (tmp_path / "g.json").write_text(two_skips().to_json().replace('"width": 3', '"width": 4'))
    g = lbp.Graph(inputs=64)
    h1 = g.layer(g.inputs[0], 16, "tanh", name="h1")
    s = g.add(h1, g.layer(h1, 16, "tanh", name="h2"), name="s")
    (tmp_path / "res.json").write_text(
        g.output(g.layer(s, 10, "softmax", name="out"), loss="cross_entropy").to_json()
    )
    done = run_cli("train", "--dataset", "digits", "--graph", "res.json", "--epochs", "2",
                   "--json", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["final"]["test"]["accuracy"] > 0.7
    done = run_cli("train", "--dataset", "sine", "--recurrent", "--hidden", "4", "--steps", "5",
                   "--outputs-at", "every", "--activations", "sigmoid,identity", "--epochs", "2",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and "5×1 → 5×1: cell sigmoid 4" in done.stdout, done.stderr
    done = run_cli("train", "--dataset", "adding", "--recurrent", "--hidden", "8", "--steps", "6",
                   "--epochs", "1", "--resume", "rnn.npz", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and "cell tanh 8 ×6 shared" in done.stdout, done.stderr
    done = run_cli("train", "--dataset", "digits", "--recurrent", "--steps", "8", "--epochs", "1",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "graph 8×8 → 10: cell tanh 16 ×8 shared, out softmax 10" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "adding", "--recurrent", "--size", "3"], "unrecognized arguments"),
        (["--dataset", "adding", "--recurrent", "--hidden", "x"], "invalid int value: 'x'"),
        (["--dataset", "adding", "--recurrent", "--hidden", "0"], "--hidden must be a positive"),
        (["--dataset", "adding", "--recurrent", "--steps", "0"], "--steps must be a positive"),
        (["--dataset", "digits", "--recurrent", "--steps", "7"], "--steps 7 does not divide"),
        (["--dataset", "sine", "--recurrent", "--steps", "4", "--activations", "a,b,c"], "two"),
        (["--dataset", "digits", "--graph", "missing.json"], "'missing.json': no such file"),
        (["--dataset", "digits", "--graph", "bad.json"], "graph JSON does not parse"),
        (["--dataset", "iris", "--graph", "res.json"], "takes 64 inputs"),
        (["--dataset", "digits", "--graph", "res.json", "--widths", "64,10"], "--widths does"),
        (["--dataset", "digits", "--graph", "res.json", "--activations", "tanh"], "drop --act"),
        (["--dataset", "adding", "--recurrent", "--widths", "2,1"], "--widths does not apply"),
        (["--dataset", "adding", "--recurrent", "--weight-decay", "-1"], "--weight-decay: weig"),
        (["--dataset", "adding", "--recurrent", "--graph", "res.json"], "not both"),
        (["--dataset", "adding", "--hidden", "4"], "--hidden needs --recurrent"),
        (["--dataset", "sine", "--outputs-at", "every"], "--outputs-at needs --recurrent"),
        (["--dataset", "adding", "--recurrent", "--inputs", "2"], "unrecognized arguments"),
        (["--dataset", "adding", "--recurrent", "--backend", "torch"], "numpy"),
    ],
)
def test_cli_bad_graph_options(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    g = lbp.Graph(inputs=64)
    (tmp_path / "res.json").write_text(
        g.output(g.layer(g.inputs[0], 10, "softmax", name="o"), loss="cross_entropy").to_json()
    )
    done = run_cli("train", *args, "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("lagrange-bp: error: ")


def _names_graph(hidden: str, out: str, act: str = "tanh") -> lbp.GraphSpec:
    g = lbp.Graph(inputs=3)
    h = g.layer(g.inputs[0], 4, act, name=hidden)
    return g.output(g.layer(h, 2, "softmax", name=out), loss="cross_entropy")


@pytest.mark.parametrize(
    ("hidden", "out", "act"),
    [
        ("J", "W", "tanh"),
        ("x", "W", "tanh"),
        ("lam", "b", "relu"),
        ("h", "h_zt", "softmax"),
        ("h", "h_rows", "softmax"),
        ("h", "rows_x_h", "softmax"),
    ],
)
def test_node_names_cannot_take_another_arrays_name(hidden: str, out: str, act: str) -> None:
    """A node or parameter set named like a kernel's tag (J, x, lam) next to a node named W, b
    or like a buffer of the printer gets arrays of its own: the kernels equal torch autograd
    and are proven. (Parameters were once named h1_W, which a node W's x_W could be.)"""
    spec = _names_graph(hidden, out, act)
    model = lbp.compile(spec)
    params = model.init_params(seed=3)
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((5, 3)), np.eye(2)[rng.integers(0, 2, 5)]
    J_t, grads_t, _, _ = torch_autograd(spec, params, X, Y)
    J, grads = model.loss_and_grad(params, X, Y)
    np.testing.assert_allclose(J, J_t, rtol=1e-10)
    for k, g in grads_t.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-10, atol=1e-14, err_msg=k)
    stepped = {k: v.copy() for k, v in params.items()}
    model.sgd_step(stepped, X, Y, 0.1)
    for k, g in grads_t.items():
        np.testing.assert_allclose(stepped[k], params[k] - 0.1 * g, rtol=1e-10, atol=1e-14)
    assert lbp.verify(model).ok
