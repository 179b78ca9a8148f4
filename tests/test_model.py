"""compile(): generated kernels against reference backprop, finite differences and PyTorch
(issue 3 items 2–4)."""

from __future__ import annotations

import copy
import gc
import importlib.util
import linecache
import os
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp import reference
from lagrange_bp.diagnostics import finite_difference_gradient

ARCHS = [
    lbp.NetworkSpec((4, 6, 3), ("tanh", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((5, 7, 6, 4), ("relu", "sigmoid", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((3, 5, 2), ("sigmoid", "identity"), "mse"),
    lbp.NetworkSpec((3, 4, 4, 2), ("softplus", "tanh", "sigmoid"), "mse"),
    lbp.NetworkSpec((2, 3, 3), ("softmax", "tanh"), "mse"),
    lbp.NetworkSpec((6, 1), "identity", "mse"),
    lbp.NetworkSpec((3, 4, 3), ("tanh", "softmax"), "mse"),
]
IDS = [s.describe() for s in ARCHS]
SMOOTH = [s for s in ARCHS if "relu" not in s.activations]


def data(
    spec: lbp.NetworkSpec, batch: int = 9, seed: int = 0, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, spec.widths[0])).astype(dtype)
    if spec.loss == "cross_entropy":
        Y = np.eye(spec.widths[-1], dtype=dtype)[rng.integers(0, spec.widths[-1], batch)]
    else:
        Y = rng.normal(size=(batch, spec.widths[-1])).astype(dtype)
    return X, Y


def random_params(model: lbp.Model, seed: int = 3) -> list:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=W.shape, scale=0.8), rng.normal(size=b.shape, scale=0.5))
        for W, b in model.init_params()
    ]


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_model_equals_reference_backprop(spec: lbp.NetworkSpec) -> None:
    model = lbp.compile(spec)
    params = random_params(model)
    X, Y = data(spec)
    loss, grads = model.loss_and_grad(params, X, Y)
    ref_loss, ref_grads, neg_dx = reference.loss_and_grad(params, spec.activations, spec.loss, X, Y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for (gW, gb), (rW, rb) in zip(grads, ref_grads):
        np.testing.assert_allclose(gW, rW, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(gb, rb, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        model.forward(params, X),
        reference.forward(params, spec.activations, X)[1][spec.depth],
        rtol=1e-12,
    )
    # λ^k = −∂J/∂x^k (CONVENTIONS §1)
    for lam, ref in zip(model.adjoint(params, X, Y), neg_dx):
        np.testing.assert_allclose(lam, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("spec", SMOOTH, ids=[s.describe() for s in SMOOTH])
def test_model_matches_central_differences(spec: lbp.NetworkSpec) -> None:
    """h = 1e-5, float64: ‖g − g_fd‖ / ‖g_fd‖ < 1e-7 over all parameters."""
    model = lbp.compile(spec)
    params = random_params(model)
    X, Y = data(spec)
    _, grads = model.loss_and_grad(params, X, Y)
    fd_grads = finite_difference_gradient(model, params, X, Y, h=1e-5)
    got = np.concatenate([a.ravel() for g in grads for a in g])
    fd = np.concatenate([a.ravel() for g in fd_grads for a in g])
    err = np.linalg.norm(np.subtract(got, fd)) / np.linalg.norm(fd)
    assert err < 1e-7, f"norm-relative error {err:.2e}"


@pytest.mark.parametrize("spec", ARCHS[:4], ids=IDS[:4])
def test_float32_path(spec: lbp.NetworkSpec) -> None:
    m64, m32 = lbp.compile(spec), lbp.compile(spec, dtype="float32")
    params = random_params(m64)
    X, Y = data(spec)
    loss64, g64 = m64.loss_and_grad(params, X, Y)
    loss32, g32 = m32.loss_and_grad(params, X, Y)
    assert loss32 == pytest.approx(loss64, rel=2e-3)
    for (a, b), (c, d) in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, c, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(b, d, rtol=2e-3, atol=2e-3)


def test_sgd_step_is_the_update_rule() -> None:
    spec = ARCHS[1]
    model = lbp.compile(spec)
    params = random_params(model)
    X, Y = data(spec)
    _, grads = model.loss_and_grad(params, X, Y)
    stepped = [(W.copy(), b.copy()) for W, b in params]
    model.sgd_step(stepped, X, Y, 0.1)
    for (W, b), (gW, gb), (W1, b1) in zip(params, grads, stepped):
        np.testing.assert_allclose(W1, W - 0.1 * gW, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b1, b - 0.1 * gb, rtol=1e-12, atol=1e-15)


HAND_SPECS = [
    lbp.NetworkSpec((5, 7, 6, 4), ("tanh", "relu", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((5, 7, 6, 2), ("sigmoid", "identity", "sigmoid"), "mse"),
]


@pytest.mark.parametrize("spec", HAND_SPECS, ids=[s.describe() for s in HAND_SPECS])
def test_benchmark_hand_trainer_step_equals_generated_step(spec: lbp.NetworkSpec) -> None:
    """The benchmarks' hand-written baseline is the same algorithm as the generated step."""
    model = lbp.compile(spec)
    X, Y = data(spec, batch=8)
    a, b = random_params(model), random_params(model)
    model.sgd_step(a, X, Y, 0.05)
    hand_trainer().HandTrainer(spec.widths, spec.activations, spec.loss, 8).step(b, X, Y, 0.05)
    for (W1, b1), (W2, b2) in zip(a, b):
        np.testing.assert_allclose(W1, W2, rtol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-12)


def test_benchmark_hand_trainer_refuses_what_it_was_not_written_for() -> None:
    with pytest.raises(ValueError, match="HandTrainer is written for hidden layers"):
        hand_trainer().HandTrainer((3, 4, 2), ("softplus", "identity"), "mse", 8)


def hand_trainer() -> types.ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hand_trainer.py"
    module_spec = importlib.util.spec_from_file_location("hand_trainer", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_extreme_preactivations_are_stable() -> None:
    """Softmax + CE and sigmoid at pre-activations of ±1000: finite, equal to stable forms."""
    spec = lbp.NetworkSpec((2, 3), "softmax", "cross_entropy")
    model = lbp.compile(spec)
    W = np.array([[1000.0, 0.0], [-1000.0, 0.0], [0.0, 0.0]])
    params = [(W, np.zeros(3))]
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    Y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, grads = model.loss_and_grad(params, X, Y)
    # z rows: (1000, -1000, 0) and (-1000, 1000, 0): −log softmax of the labelled class
    assert loss == pytest.approx((2000.0 + 2000.0) / 2, rel=1e-12)
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(grads[0][0], (p - Y).T @ X / 2, atol=1e-12)
    sig = lbp.NetworkSpec((1, 1), "sigmoid", "mse")
    m = lbp.compile(sig)
    X = np.array([[1000.0], [-1000.0]])
    Y = np.array([[0.5], [0.5]])
    loss, grads = m.loss_and_grad([(np.ones((1, 1)), np.zeros(1))], X, Y)
    assert loss == pytest.approx(0.125, rel=1e-12)
    assert np.all(np.isfinite(grads[0][0])) and grads[0][0][0, 0] == pytest.approx(0.0, abs=1e-300)


def test_source_and_equations_are_inspectable() -> None:
    """STYLE 6: readable names (x1 is X^1), a comment per equation, a docstring per kernel."""
    model = lbp.compile(lbp.NetworkSpec((4, 8, 3), ("tanh", "softmax"), "cross_entropy"))
    src = model.source("sgd_step")
    assert src.startswith('def sgd_step(params, X, Y, eta, buf):\n    """sgd_step(params, X, Y')
    assert "    Equations, in order:\n      Z^1 = X^0 W^1ᵀ + 1 b^1ᵀ" in src
    assert "    # X^1 = tanh(Z^1)\n    np.tanh(x1, out=x1)\n" in src
    assert "np.matmul(X, W1.T, out=x1)" in src  # Z^1 kept in x1's buffer: σ' reads X^1 only
    # (Y − X^2)/B, in Z^2's buffer: the loss read Z^2 (log-softmax), nothing reads it after
    assert "    np.subtract(Y, x2, out=z2)\n    np.divide(z2, B, out=z2)\n    g2 = z2\n" in src
    assert "np.square(x1, out=" in src  # tanh' = 1 − x², from the record's output form
    update = src.split("# W^2 ←", 1)[1]  # the loss block before it negates −Σ y log x
    assert "-1.0" not in update and "np.negative" not in update  # signs folded: W ← W + η GᵀX
    assert src.rstrip().endswith("return loss")  # J before the step, from the same forward pass
    labels = [label for label, _ in model.equations()]
    assert "W^1 ← W^1 − η ∂L/∂W^1" in labels
    assert any(label.startswith("G^2 = Dσ(Z^2)ᵀ Λ^2 with Λ^2 substituted") for label in labels)
    with pytest.raises(ValueError, match="unknown kernel 'backward'; known: forward, adjoint"):
        model.source("backward")


def test_generated_source_is_in_linecache_until_the_model_is_released() -> None:
    """As lambdify does: tracebacks show the generated lines, and the entry goes with the model."""
    model = lbp.compile(lbp.NetworkSpec((2, 3, 1), "tanh", "mse"))
    filename = model.kernels["forward"].fn.__code__.co_filename
    assert linecache.getline(filename, 1).startswith("def forward(params, X, buf):")
    del model
    gc.collect()
    assert filename not in linecache.cache


def test_common_subexpressions_are_computed_once() -> None:
    """z*tanh(softplus(z)): σ' has tanh(softplus(z)) twice; the kernel computes it once there."""
    model = lbp.compile(lbp.NetworkSpec((2, 3, 1), ("z*tanh(softplus(z))", "identity")))
    src = model.source("loss_and_grad")
    vjp = src[src.index("# G^1") :]
    assert vjp.count("np.logaddexp(0.0, z1") == 1 and vjp.count("np.tanh(") == 1
    assert src.count("np.logaddexp(0.0, z1") == 2  # once in the forward pass, once for σ'


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, p, X, Y: m.loss_and_grad(p, X, Y[:3]),
            "X and Y must have the same number of rows",
        ),
        (lambda m, p, X, Y: m.forward(p, X[:, :2]), r"X must have shape \(B, 4\), got \(9, 2\)"),
        (lambda m, p, X, Y: m.loss_and_grad(p, X, Y[:, :2]), r"Y must have shape \(B, 3\)"),
        (lambda m, p, X, Y: m.forward(p, np.where(X > 1, np.nan, X)), "X contains NaN or inf"),
        (
            lambda m, p, X, Y: m.loss_and_grad(p, X, np.where(Y > 0.5, np.inf, Y)),
            "Y contains NaN or inf",
        ),
        (lambda m, p, X, Y: m.forward(p[:1], X), "params must be a list of 2"),
        (
            lambda m, p, X, Y: m.forward([p[0], (p[1][0].T, p[1][1])], X),
            r"W\^2 must have shape \(3, 6\), got \(6, 3\)",
        ),
        (
            lambda m, p, X, Y: m.forward([p[0], (p[1][0], p[1][1] * np.nan)], X),
            r"b\^2 contains NaN or inf",
        ),
        (lambda m, p, X, Y: m.forward(p, X.astype(str)), "X must be a numeric array"),
        (lambda m, p, X, Y: m.forward(p, [["a"] * 4]), "X must be a numeric array"),
        (lambda m, p, X, Y: m.loss_and_grad(p, X, Y * 2), "each row must sum to 1"),
        (lambda m, p, X, Y: m.sgd_step(p, X, Y, -1.0), "lr must be a positive finite number"),
    ],
)
def test_bad_input_names_the_array(call: object, message: str) -> None:
    spec = ARCHS[0]
    model = lbp.compile(spec)
    X, Y = data(spec)
    with pytest.raises(ValueError, match=message):
        call(model, model.init_params(), X, Y)  # type: ignore[operator]


def test_compile_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"spec must be a lagrange_bp\.NetworkSpec"):
        lbp.compile("4-3-2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype must be one of float64, float32, got 'int8'"):
        lbp.compile(ARCHS[0], dtype="int8")


def _torch():
    if os.environ.get("CI") == "true":
        import torch  # CI installs torch==2.13.0: never skip there

        return torch
    return pytest.importorskip("torch")


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_model_equals_pytorch_autograd(spec: lbp.NetworkSpec) -> None:
    torch = _torch()
    model = lbp.compile(spec)
    params = random_params(model)
    X, Y = data(spec)
    _, grads = model.loss_and_grad(params, X, Y)
    tp = [
        (torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
        for W, b in params
    ]
    x = torch.tensor(X)
    for (W, b), act in zip(tp, spec.activations):
        z = x @ W.T + b
        x = {
            "identity": lambda v: v,
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "relu": torch.relu,
            "softplus": torch.nn.functional.softplus,
            "softmax": lambda v: torch.softmax(v, dim=1),
        }[act](z)
        last_z = z
    Yt = torch.tensor(Y)
    if spec.loss == "mse":
        J = 0.5 * ((x - Yt) ** 2).sum() / len(X)
    else:
        J = -(Yt * torch.log_softmax(last_z, dim=1)).sum() / len(X)
    J.backward()
    for (gW, gb), (W, b) in zip(grads, tp):
        np.testing.assert_allclose(gW, W.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_sgd_step_checks_a_params_list_fully_once_then_its_layout() -> None:
    """A loop of checked steps pays for a full scan of params only the first time (issue 14);
    a non-finite result, or a list it has not seen, is still caught."""
    model = lbp.compile(lbp.NetworkSpec((3, 4, 2), ("tanh", "softmax"), "cross_entropy"))
    params = model.init_params(seed=0)
    X, Y = np.ones((5, 3)), np.eye(2)[[0, 1, 0, 1, 0]]
    model.sgd_step(params, X, Y, 0.1)
    model.sgd_step(params, X, Y, 0.1)  # the same list: its layout only
    params[0][0][0, 0] = np.nan  # written in place behind the model's back
    with pytest.raises(ValueError, match="became NaN or infinite"):
        model.sgd_step(params, X, Y, 0.1)
    fresh = model.init_params(seed=1)
    fresh[1][1][0] = np.inf
    with pytest.raises(ValueError, match="b\\^2 contains NaN or inf"):
        model.sgd_step(fresh, X, Y, 0.1)
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.sgd_step(model.init_params(seed=2), np.full((5, 3), np.nan), Y, 0.1)


def test_g_is_computed_in_z_where_it_needs_no_copy() -> None:
    """relu's G^k = step(Z^k) ⊙ Λ^k goes into Z^k's buffer (one (B, n_k) buffer fewer; Z^k is
    not read after); a σ' that reads z several times keeps G^k a buffer of its own rather
    than pay a copy; both are proven."""
    relu = lbp.compile(lbp.NetworkSpec((4, 6, 3), ("relu", "softmax"), "cross_entropy"))
    src = relu.source("loss_and_grad")
    assert "np.greater(z1, 0.0, out=z1)\n    np.multiply(z1, lam1, out=z1)\n    g1 = z1\n" in src
    assert "g1" not in relu.kernels["loss_and_grad"].buffer_names
    mish = lbp.compile(
        lbp.NetworkSpec((4, 6, 3), ("z*tanh(log(1 + exp(z)))", "softmax"), "cross_entropy")
    )
    assert "g1" in mish.kernels["loss_and_grad"].buffer_names
    assert "np.copyto(z1" not in mish.source("loss_and_grad")
    for model in (relu, mish):
        assert lbp.verify(model).ok


@pytest.mark.parametrize(
    "spec",
    [
        lbp.NetworkSpec((4, 6, 5, 3), ("relu", "softmax", "softmax"), "cross_entropy"),
        lbp.NetworkSpec((4, 6, 3), ("sigmoid", "identity"), "mse", weight_decay=0.1),
    ],
    ids=["softmax hidden", "mse"],
)
def test_sums_and_row_maxima_match_the_reference_at_a_smaller_last_batch(
    spec: lbp.NetworkSpec,
) -> None:
    """Sums over samples and over each sample's entries are BLAS products with a vector the
    kernel fills, a softmax's row maximum is taken over a transposed copy, and a loss c U ⊙ V
    is one vdot; at a full batch and at a smaller last batch (the first rows, or the first
    columns, of the full batch's buffers) the kernel equals the chain-rule reference."""
    model = lbp.compile(spec)
    src = model.source("loss_and_grad")
    assert "np.add.reduce" not in src and "np.vdot(" in src
    params = model.init_params(seed=1)
    rng = np.random.default_rng(2)
    _, buffers = model.gradient_buffers(8, last=5)
    for rows in (8, 5):
        X = rng.standard_normal((rows, 4)) * 3
        Y = np.eye(3)[rng.integers(0, 3, rows)] if spec.loss == "cross_entropy" else X[:, :3]
        loss, grads = model.kernels["loss_and_grad"].fn(params, X, Y, buffers[rows])
        ref_loss, ref, _ = reference.loss_and_grad(
            params, spec.activations, spec.loss, X, Y, spec.weight_decay
        )
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        for (gW, gb), (rW, rb) in zip(grads, ref):
            np.testing.assert_allclose(gW, rW, rtol=1e-11, atol=1e-13)
            np.testing.assert_allclose(gb, rb, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("pair", [1, 3], ids=["short", "long"])
def test_a_pair_changed_after_a_checked_step_is_checked_again(pair: int) -> None:
    """sgd_step's shortcut for the parameters it updated last sees a pair edited in place."""
    model = lbp.compile(lbp.NetworkSpec((4, 6, 3), ("tanh", "softmax"), "cross_entropy"))
    params = model.init_params(seed=0)
    X, Y = np.random.default_rng(0).random((5, 4)), np.eye(3)[[0, 1, 2, 0, 1]]
    model.sgd_step(params, X, Y, 0.1)
    W, b = params[1]
    params[1] = (W, b, b)[:pair]  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"params\[1\] must be a pair \(W\^2, b\^2\)"):
        model.sgd_step(params, X, Y, 0.1)


def _threads(calls: list, rounds: int) -> list:
    """Each call ``rounds`` times, the calls at once on threads of their own; the last results."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: [call() for _ in range(rounds)][-1], calls))


def _flat(params: object) -> list[np.ndarray]:
    """A Model's (W, b) pairs or a GraphModel's dict, as a list of arrays."""
    if isinstance(params, dict):
        return list(params.values())
    return [a for pair in params for a in pair]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["chain", "graph"])
def test_threads_that_share_a_model_share_no_buffers(kind: str) -> None:
    """Kernels write into preallocated buffers: each call takes a set of its own, so four
    threads computing on one model get what one thread gets (the model's one set per batch
    size, shared, gave wrong outputs in about 70% of such calls and made lbp.train diverge)."""
    spec = lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")
    model = lbp.compile(spec if kind == "chain" else lbp.chain_graph(spec))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((200, 64)), np.eye(10)[rng.integers(0, 10, 200)]
    params = [model.init_params(seed=s) for s in range(4)]
    calls = {
        "forward": [lambda p=p: [model.forward(p, X[:32])] for p in params],
        "loss_and_grad": [
            lambda p=p: _flat(model.loss_and_grad(p, X[:32], Y[:32])[1]) for p in params
        ],
        "train": [
            lambda s=s: _flat(lbp.train(model, X, Y, epochs=2, batch_size=32, seed=s).params)
            for s in range(4)
        ],
    }
    for what, fns in calls.items():
        alone = [f() for f in fns]
        for want, got in zip(alone, _threads(fns, 1 if what == "train" else 100)):
            for a, b in zip(want, got, strict=True):
                np.testing.assert_array_equal(a, b, err_msg=what)


@pytest.mark.parametrize("kind", ["chain", "graph"])
def test_train_gives_back_the_buffers_it_took_for_the_next_call(kind: str) -> None:
    """lbp.train returns its sgd_step buffers under the key it took them by (batch size and
    last batch), so the next call with that shape reuses them, and a call with another last
    batch never gets buffers without a view for it (once, a set for a last batch of 5 was
    filed under the epoch count, 1, and the next call with a last batch of 1 failed)."""
    spec = lbp.NetworkSpec((4, 3, 2), ("tanh", "softmax"), "cross_entropy")
    model = lbp.compile(spec if kind == "chain" else lbp.chain_graph(spec))
    rng = np.random.default_rng(0)
    X, Y = rng.random((37, 4)), np.eye(2)[rng.integers(0, 2, 37)]
    gather = ("gather", 32, (4,), (2,))
    lbp.train(model, X, Y, epochs=3, batch_size=32)
    assert set(model._idle) == {("sgd_step", 32, 5), gather}
    lent = {key: idle[0] for key, idle in model._idle.items()}
    lbp.train(model, X, Y, epochs=1, batch_size=32, seed=1)
    for key, idle in model._idle.items():  # the same buffers, taken and given back
        assert len(idle) == 1 and idle[0] is lent[key]
    result = lbp.train(model, X[:33], Y[:33], epochs=1, batch_size=32)  # a last batch of 1
    assert np.isfinite(result.history["train_loss"]).all()
    assert set(model._idle) == {("sgd_step", 32, 5), ("sgd_step", 32, 1), gather}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernel_and_gather_buffers_start_on_a_cache_line(dtype: str) -> None:
    """Buffers start on a 64-byte boundary (NumPy only promises 16), so that the kernels'
    speed does not depend on where the allocator put them; the last batch's views too."""
    from lagrange_bp.train import Batches

    model = lbp.compile(lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy"), dtype)
    for _ in range(20):  # allocations of every size class, wherever they fall
        sets = model.new_buffers("sgd_step", 32, 5)
        for rows in (32, 5):  # the last batch's: views of the first rows (or columns)
            assert all(a.ctypes.data % 64 == 0 and a.dtype == dtype for a in sets[rows])
        X, Y = np.zeros((100, 64), dtype), np.zeros((100, 10), dtype)
        assert all(a.ctypes.data % 64 == 0 for a in Batches(X, Y, 32).buffers)


@pytest.mark.parametrize("kind", ["chain", "graph"])
def test_a_deep_copy_of_a_model_has_buffers_of_its_own(kind: str) -> None:
    spec = lbp.NetworkSpec((3, 4, 2), ("tanh", "softmax"), "cross_entropy")
    model = lbp.compile(spec if kind == "chain" else lbp.chain_graph(spec))
    params, X = model.init_params(seed=0), np.arange(12.0).reshape(4, 3) / 10
    out = model.forward(params, X)
    twin = copy.deepcopy(model)
    assert twin._idle == {} and twin._lock is not model._lock and twin.kernels is model.kernels
    np.testing.assert_array_equal(twin.forward(params, X), out)
