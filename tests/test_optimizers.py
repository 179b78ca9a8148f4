"""Update rules on the derived gradient (issue 14 item 3): equal to torch.optim step by step,
early stopping, and a resume that continues a run bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp import checkpoint
from lagrange_bp.datasets import load
from lagrange_bp.optimizers import OPTIMIZERS, Optimizer, pack, pack_params

SPEC = lbp.NetworkSpec((4, 6, 3), ("tanh", "softmax"), "cross_entropy")


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(8, 4))
    Y = np.eye(3)[rng.integers(0, 3, 8)]
    return X, Y


@pytest.mark.parametrize("flat", [False, True], ids=["step", "step_flat"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_rule_equals_torch_optim_over_ten_steps(name: str, flat: bool) -> None:
    torch = pytest.importorskip("torch")
    model = lbp.compile(SPEC)
    theta, params = pack_params(model.init_params(seed=1))
    tp = [
        (torch.tensor(W.copy(), requires_grad=True), torch.tensor(b.copy(), requires_grad=True))
        for W, b in params
    ]
    flat = [t for pair in tp for t in pair]
    made = {
        "sgd": lambda: torch.optim.SGD(flat, lr=0.1),
        "momentum": lambda: torch.optim.SGD(flat, lr=0.1, momentum=0.8),
        "nesterov": lambda: torch.optim.SGD(flat, lr=0.1, momentum=0.8, nesterov=True),
        "adam": lambda: torch.optim.Adam(flat, lr=0.01, betas=(0.8, 0.95), eps=1e-6),
    }[name]()
    ours = Optimizer(name, 0.01 if name == "adam" else 0.1, 0.8, (0.8, 0.95), 1e-6)
    for step in range(10):
        X, Y = _batch(step)
        _, grads = model.loss_and_grad(params, X, Y)
        if flat:  # every parameter at once, on the flat array params are views of
            ours.step_flat(theta, pack_params(grads)[0], [a.shape for p in params for a in p])
        else:
            ours.step(params, grads)
        made.zero_grad()
        z1 = torch.tensor(X) @ tp[0][0].T + tp[0][1]
        z2 = torch.tanh(z1) @ tp[1][0].T + tp[1][1]
        J = -(torch.tensor(Y) * torch.log_softmax(z2, dim=1)).sum() / len(X)
        J.backward()
        made.step()
    gap = max(
        float(np.max(np.abs(a - t.detach().numpy())))
        for pair, tpair in zip(params, tp)
        for a, t in zip(pair, tpair)
    )
    assert gap < 1e-12, gap


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_flat_is_step_bit_for_bit_and_keeps_the_state_per_parameter(
    name: str, dtype: str
) -> None:
    """The flat step (one array for all parameters, issue 14) does the list step's
    arithmetic: the same bits, over steps, a state round trip and a switch between the two."""
    model = lbp.compile(
        lbp.NetworkSpec((4, 6, 5, 3), ("tanh", "relu", "softmax"), "cross_entropy"), dtype
    )
    start = model.init_params(seed=2)
    apart = [(W.copy(), b.copy()) for W, b in start]
    theta, flat = pack_params(start)
    shapes = [a.shape for pair in start for a in pair]
    kw = dict(lr=0.05, momentum=0.7, betas=(0.8, 0.9), eps=1e-6)
    one, two = Optimizer(name, **kw), Optimizer(name, **kw)
    for step in range(8):
        X, Y = _batch(step)
        _, grads = model.loss_and_grad(apart, X, Y)
        one.step(apart, grads)
        two.step_flat(theta, pack_params(grads)[0], shapes)
        if step == 3:  # through a saved state, as a resumed run does
            one, two = Optimizer.from_state(one.state()), Optimizer.from_state(two.state())
        if step == 5:  # and the list step on the flat optimizer's views
            _, grads = model.loss_and_grad(flat, X, Y)
            two.step(flat, grads)
            one.step(apart, model.loss_and_grad(apart, X, Y)[1])
    for (W, b), (W2, b2) in zip(apart, flat):
        assert W.dtype == W2.dtype == np.dtype(dtype)
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    a, b = one.state(), two.state()
    assert a["steps"] == b["steps"] == 9 and sorted(a["slots"]) == sorted(b["slots"])
    for slot in a["slots"]:
        assert [x.shape for x in b["slots"][slot]] == shapes
        for x, y in zip(a["slots"][slot], b["slots"][slot]):
            assert np.array_equal(x, y) and not np.shares_memory(y, two.flat[slot])


def test_pack_and_the_flat_gradient_buffers() -> None:
    """pack_params copies (W^1, b^1, W^2, …) end to end into one array whose views the caller
    gets; gradient_buffers has the loss_and_grad kernel write ∂L/∂θ into one array of that
    layout; a smaller last batch uses the first rows of the full batch's buffers."""
    model = lbp.compile(lbp.NetworkSpec((4, 6, 3), ("tanh", "softmax"), "cross_entropy", 0.01))
    params = model.init_params(seed=0)
    theta, views = pack_params(params)
    assert theta.shape == (4 * 6 + 6 + 6 * 3 + 3,) and theta.flags.c_contiguous
    assert np.array_equal(theta, np.concatenate([a.ravel() for p in params for a in p]))
    assert all(np.shares_memory(a, theta) for p in views for a in p)
    assert not any(np.shares_memory(a, theta) for p in params for a in p)
    assert all(a.flags.c_contiguous for p in views for a in p)
    zeros, like = pack([np.ones((2, 3)), np.ones(4)], copy=False)
    assert zeros.shape == (10,) and not zeros.any() and like[0].shape == (2, 3)
    grad, buffers = model.gradient_buffers(8, last=5)
    assert set(buffers) == {8, 5}
    for rows in (8, 5):
        X, Y = _batch(rows)
        X, Y = X[:rows], Y[:rows]
        loss, grads = model.kernels["loss_and_grad"].fn(views, X, Y, buffers[rows])
        assert all(np.shares_memory(g, grad) for pair in grads for g in pair)
        ref_loss, ref = model.loss_and_grad(views, X, Y)
        assert loss == ref_loss
        assert np.array_equal(grad, pack_params(ref)[0])
    full, last = buffers[8], buffers[5]
    assert sum(np.shares_memory(a, b) for a, b in zip(full, last)) == len(full)
    with pytest.raises(ValueError, match="has no buffer"):
        model.new_buffers("loss_and_grad", 8, given={"nope": grad})


def test_a_state_that_does_not_fit_is_refused() -> None:
    opt = Optimizer("adam", 0.01)
    theta, params = pack_params(lbp.compile(SPEC).init_params())
    opt.step_flat(theta, np.zeros_like(theta), [a.shape for p in params for a in p])
    state = opt.state()
    with pytest.raises(ValueError, match="have shapes"):
        Optimizer.from_state(state).step_flat(theta[:-3], theta[:-3], [(4, 6)])
    del state["slots"]["s"]
    with pytest.raises(ValueError, match="has no 's' arrays"):
        Optimizer.from_state(state)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_resumed_run_equals_one_run_bit_for_bit(name: str) -> None:
    data = load("iris")
    model = lbp.compile(lbp.NetworkSpec((4, 8, 3), ("tanh", "softmax"), "cross_entropy"))
    lr = 0.01 if name == "adam" else 0.1
    whole = lbp.train(model, data.X_train, data.Y_train, 5, 16, lr, seed=3, optimizer=name)
    first = lbp.train(model, data.X_train, data.Y_train, 2, 16, lr, seed=3, optimizer=name)
    rest = lbp.train(
        model,
        data.X_train,
        data.Y_train,
        3,
        16,
        lr,
        seed=3,
        params=first.params,
        optimizer=name,
        resume=first.state,
    )
    for (W, b), (W2, b2) in zip(whole.params, rest.params):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    assert rest.history["epoch"] == [3.0, 4.0, 5.0]
    assert rest.state["optimizer"]["steps"] == whole.state["optimizer"]["steps"]


def test_the_cli_resumes_from_a_checkpoint_bit_for_bit(tmp_path: Path) -> None:
    def cli(*argv: str) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lagrange_bp",
                "train",
                "--dataset",
                "iris",
                "--widths",
                "4,8,3",
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
                "--seed",
                "2",
                *argv,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    cli("--epochs", "5", "--save", "whole.npz")
    cli("--epochs", "2", "--save", "first.npz")
    cli("--epochs", "3", "--resume", "first.npz", "--save", "rest.npz")
    _, whole, info = checkpoint.load(tmp_path / "whole.npz")
    _, rest, info_rest = checkpoint.load(tmp_path / "rest.npz")
    for (W, b), (W2, b2) in zip(whole, rest):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    a, b = info["training_state"], info_rest["training_state"]
    assert a["rng"] == b["rng"] and a["epoch"] == b["epoch"] == 5
    for slot in ("m", "s"):
        for x, y in zip(a["optimizer"]["slots"][slot], b["optimizer"]["slots"][slot]):
            assert np.array_equal(x, y)


def test_an_altered_optimizer_state_is_refused(tmp_path: Path) -> None:
    model = lbp.compile(SPEC)
    X, Y = _batch()
    result = lbp.train(model, X, Y, 2, 4, 0.01, optimizer="adam")
    path = checkpoint.save(tmp_path / "m.npz", SPEC, result.params, {}, result.state)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["opt_m_0"] = arrays["opt_m_0"] + 1.0
    np.savez(path, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="altered"):
        checkpoint.load(path)


def test_early_stopping_keeps_the_best_epoch() -> None:
    data = load("digits")
    model = lbp.compile(lbp.NetworkSpec((64, 32, 10), ("tanh", "softmax"), "cross_entropy"))
    result = lbp.train(
        model,
        data.X_train[:300],
        data.Y_train[:300],
        60,
        16,
        0.5,
        seed=0,
        validation=(data.X_test, data.Y_test),
        patience=3,
    )
    history = result.history["val_loss"]
    assert len(history) < 60, "it stopped early"
    assert result.best_epoch is not None
    assert history[result.best_epoch - 1] == min(history)
    assert len(history) == result.best_epoch + 3
    kept = lbp.evaluate(model, result.params, data.X_test, data.Y_test)["loss"]
    assert kept == pytest.approx(min(history), rel=1e-12)


def test_bad_optimizer_arguments() -> None:
    model = lbp.compile(SPEC)
    X, Y = _batch()
    with pytest.raises(ValueError, match="optimizer must be one of sgd, momentum"):
        lbp.train(model, X, Y, optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\)"):
        lbp.train(model, X, Y, optimizer="nesterov", momentum=1.5)
    with pytest.raises(ValueError, match="betas must be two numbers"):
        lbp.train(model, X, Y, optimizer="adam", betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"patience .* needs validation"):
        lbp.train(model, X, Y, patience=2)
    first = lbp.train(model, X, Y, 1, optimizer="adam")
    with pytest.raises(ValueError, match="resume continues a run with its own optimizer"):
        lbp.train(model, X, Y, 1, params=first.params, resume=first.state)
    with pytest.raises(ValueError, match="resume needs the parameters"):
        lbp.train(model, X, Y, 1, optimizer="adam", resume=first.state)
