"""lbp.to_torch (issue 15): a torch Module whose backward is the derived adjoint, printed for
PyTorch — against torch autograd on nn.Sequential, gradcheck, torch.optim, float32, the CUDA
device and DistributedDataParallel on two processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp.functions import get_activation, get_loss
from lagrange_bp.primitives import NUMPY_FORMS, TORCH_FORMS

if os.environ.get("CI") == "true":
    import torch  # CI installs torch==2.13.0: never skip there
else:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")

from lagrange_bp.torch_export import TORCH_KERNELS, to_torch

ROOT = Path(__file__).resolve().parents[1]
MISH = "z*tanh(log(1 + exp(z)))"
LOGCOSH = "log(cosh(x - y))"
ARCHS = [
    lbp.NetworkSpec((4, 6, 3), ("tanh", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((5, 7, 6, 4), ("relu", "sigmoid", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((3, 5, 2), ("sigmoid", "identity"), "mse"),
    lbp.NetworkSpec((3, 4, 4, 2), ("softplus", "tanh", "sigmoid"), "mse"),
    lbp.NetworkSpec((2, 3, 3), ("softmax", "tanh"), "mse"),
    lbp.NetworkSpec((6, 1), "identity", "mse"),
    lbp.NetworkSpec((3, 4, 3), ("tanh", "softmax"), "mse"),
    lbp.NetworkSpec((3, 5, 2), (MISH, "identity"), LOGCOSH),
    lbp.NetworkSpec((3, 4, 4, 2), ("sin(z) + z**3/3", MISH, "atan(z)"), "(x - y)**4/4"),
    lbp.NetworkSpec((4, 5, 3), ("abs(z) + sqrt(1 + z**2)", "softmax"), "cross_entropy"),
]
IDS = [s.describe() for s in ARCHS]

#: each activation and loss of ARCHS written by hand in torch (not read from the package)
TORCH_ACTS: dict[str, Any] = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softplus": torch.nn.functional.softplus,
    "softmax": lambda z: torch.softmax(z, dim=1),
    MISH: lambda z: z * torch.tanh(torch.log(1 + torch.exp(z))),
    "sin(z) + z**3/3": lambda z: torch.sin(z) + z**3 / 3,
    "atan(z)": torch.atan,
    "abs(z) + sqrt(1 + z**2)": lambda z: torch.abs(z) + torch.sqrt(1 + z**2),
}
TORCH_LOSSES: dict[str, Any] = {
    "mse": lambda x, y: 0.5 * ((x - y) ** 2).sum(),
    "cross_entropy": lambda x, y: -(y * torch.log(x)).sum(),
    LOGCOSH: lambda x, y: torch.log(torch.cosh(x - y)).sum(),
    "(x - y)**4/4": lambda x, y: ((x - y) ** 4).sum() / 4,
}


ACT_BY_KEY = {get_activation(key).key: fn for key, fn in TORCH_ACTS.items()}
LOSS_BY_KEY = {get_loss(key).key: fn for key, fn in TORCH_LOSSES.items()}


class Act(torch.nn.Module):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.fn = ACT_BY_KEY[key]

    def forward(self, z: Any) -> Any:
        return self.fn(z)


def sequential(spec: lbp.NetworkSpec, params: list, dtype: Any = torch.float64) -> Any:
    """The plain nn.Sequential of the spec, with the same parameters."""
    layers: list[Any] = []
    for (W, b), act in zip(params, spec.activations):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(W))
            lin.bias.copy_(torch.as_tensor(b))
        layers += [lin, Act(act)]
    return torch.nn.Sequential(*layers)


def loss_of(spec: lbp.NetworkSpec) -> Any:
    return lambda x, y: LOSS_BY_KEY[spec.loss](x, y) / len(x)


def data(spec: lbp.NetworkSpec, batch: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, spec.widths[0]))
    if spec.loss == "cross_entropy":
        Y = np.eye(spec.widths[-1])[rng.integers(0, spec.widths[-1], batch)]
    else:
        Y = rng.normal(size=(batch, spec.widths[-1]))
    return X, Y


def random_params(spec: lbp.NetworkSpec, seed: int = 3) -> list:
    rng = np.random.default_rng(seed)
    w = spec.widths
    return [
        (rng.normal(size=(w[k], w[k - 1]), scale=0.8), rng.normal(size=w[k], scale=0.5))
        for k in range(1, len(w))
    ]


def autograd_reference(spec: lbp.NetworkSpec, params: list, X: np.ndarray, Y: np.ndarray):
    """J, [(∂J/∂W, ∂J/∂b)] and [−∂J/∂x^k] by torch autograd on nn.Sequential."""
    seq = sequential(spec, params)
    x, outs = torch.tensor(X), []
    for module in seq:
        x = module(x)
        if isinstance(module, Act):
            x.retain_grad()
            outs.append(x)
    J = loss_of(spec)(x, torch.tensor(Y))
    J.backward()
    lins = [m for m in seq if isinstance(m, torch.nn.Linear)]
    grads = [(m.weight.grad, m.bias.grad) for m in lins]
    return J.detach(), grads, [-o.grad for o in outs]


def close(a: Any, b: Any, tol: float = 1e-12) -> None:
    np.testing.assert_allclose(
        torch.as_tensor(a).detach().numpy(), torch.as_tensor(b).detach().numpy(), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_gradients_and_multipliers_equal_autograd_on_sequential(spec: lbp.NetworkSpec) -> None:
    """The spec's own J (fused Λ^N), a torch loss on module(X) (general Λ^N) and λ^k."""
    params = random_params(spec)
    X, Y = data(spec)
    J_ref, ref, lams_ref = autograd_reference(spec, params, X, Y)
    fused = to_torch(spec, params=params)
    J = fused(torch.tensor(X), torch.tensor(Y))
    J.backward()
    close(J, J_ref)
    general = to_torch(spec, params=params)
    loss_of(spec)(general(torch.tensor(X)), torch.tensor(Y)).backward()
    for module in (fused, general):
        for (W, b), (gW, gb) in zip(module.pairs(), ref):
            close(W.grad, gW)
            close(b.grad, gb)
    for lam, lam_ref in zip(fused.adjoint(X, Y), lams_ref, strict=True):
        close(lam, lam_ref)


@pytest.mark.parametrize("spec", ARCHS, ids=IDS)
def test_gradcheck(spec: lbp.NetworkSpec) -> None:
    """torch.autograd.gradcheck (float64) of module(X) and of J, parameters and input."""
    module = to_torch(spec, params=random_params(spec))
    X, Y = data(spec, batch=4)
    Xt = torch.tensor(X, requires_grad=True)
    Yt = torch.tensor(Y)
    flat = [a for pair in module.pairs() for a in pair]
    from lagrange_bp.torch_export import DerivedForward, DerivedLoss

    assert torch.autograd.gradcheck(
        lambda x, *p: DerivedForward.apply(module.kernels, x, *p), (Xt, *flat)
    )
    assert torch.autograd.gradcheck(
        lambda x, *p: DerivedLoss.apply(module.kernels, x, Yt, *p), (Xt, *flat)
    )


def test_any_loss_downstream_and_an_input_that_requires_grad() -> None:
    """module(X) composes with torch: a weighted loss downstream, a layer upstream."""
    spec = ARCHS[1]
    params = random_params(spec)
    X = data(spec)[0]
    weights = torch.linspace(0.5, 2.0, spec.widths[-1], dtype=torch.float64)
    pre = torch.nn.Linear(spec.widths[0], spec.widths[0], dtype=torch.float64)
    seq = torch.nn.Sequential(pre, sequential(spec, params))
    module = torch.nn.Sequential(pre, to_torch(spec, params=params))
    outs = []
    for net in (seq, module):
        net.zero_grad()
        (net(torch.tensor(X)) ** 2 * weights).sum().backward()
        outs.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*outs, strict=True):
        close(a, b)


def test_one_sgd_step_equals_the_numpy_models_sgd_step() -> None:
    spec = ARCHS[1]
    model = lbp.compile(spec)
    params = random_params(spec)
    X, Y = data(spec)
    module = to_torch(spec, params=params)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    opt.zero_grad()
    module(X, Y).backward()
    opt.step()
    stepped = [(W.copy(), b.copy()) for W, b in params]
    model.sgd_step(stepped, X, Y, 0.1)
    for (W, b), (Wt, bt) in zip(stepped, module.to_numpy(), strict=True):
        np.testing.assert_allclose(Wt, W, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bt, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("spec", ARCHS[:4] + ARCHS[7:8], ids=IDS[:4] + IDS[7:8])
def test_float32_within_1e_5_of_float32_autograd(spec: lbp.NetworkSpec) -> None:
    params = random_params(spec)
    X, Y = data(spec)
    module = to_torch(spec, torch.float32, params=params)
    J = module(X, Y)
    J.backward()
    assert J.dtype == torch.float32 and module.W1.grad.dtype == torch.float32
    seq = sequential(spec, params, torch.float32)
    J_ref = loss_of(spec)(seq(torch.tensor(X, dtype=torch.float32)), torch.tensor(Y).float())
    J_ref.backward()
    close(J, J_ref, 1e-5)
    lins = [m for m in seq if isinstance(m, torch.nn.Linear)]
    for (W, b), lin in zip(module.pairs(), lins, strict=True):
        close(W.grad, lin.weight.grad, 1e-5)
        close(b.grad, lin.bias.grad, 1e-5)


def test_parameters_are_the_numpy_models() -> None:
    """Same initial parameters as model.init_params(seed); to_numpy/from_numpy round trip."""
    spec = ARCHS[1]
    module = to_torch(spec, seed=4)
    assert [name for name, _ in module.named_parameters()] == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for (W, b), (Wn, bn) in zip(module.to_numpy(), lbp.compile(spec).init_params(4), strict=True):
        assert np.array_equal(W, Wn) and np.array_equal(b, bn)
    other = random_params(spec, seed=9)
    module.from_numpy(other)
    for (W, b), (Wn, bn) in zip(module.to_numpy(), other, strict=True):
        assert np.array_equal(W, Wn) and np.array_equal(b, bn)
    X = data(spec)[0]
    np.testing.assert_allclose(
        module(X).detach().numpy(), lbp.compile(spec).forward(other, X), rtol=1e-13
    )


def test_the_source_is_printed_from_the_derived_equations() -> None:
    module = to_torch(lbp.NetworkSpec((4, 8, 3), ("tanh", "softmax"), "cross_entropy"))
    assert set(module.kernels) == set(TORCH_KERNELS)
    src = module.source()
    assert src.startswith("def backward(params, X, saved, grad, need_x):")
    assert "    # Λ^1 = G^2 W^2\n    lam1 = g2 @ W2\n" in src
    # −G^1ᵀ X^0, one call; beta=0: addmm does not read W1, a tensor of the result's shape
    assert "gW1 = torch.addmm(W1, g1.T, X, beta=0, alpha=-1.0)" in src
    assert "    # G^1 = σ'_1(Z^1) ⊙ Λ^1, σ'_1 = 1 - x**2 in x = X^1" in src
    fused = module.source("loss_backward")
    assert "    g2 = Y - x2\n    g2.div_(B)\n" in fused  # (Y − X^N)/B, as in the NumPy kernel
    assert "    x1 = X @ W1.T\n    x1.add_(b1)\n    # X^1 = tanh(Z^1)\n    x1.tanh_()\n" in (
        module.source("forward")
    )
    with pytest.raises(ValueError, match="unknown kernel 'sgd_step'; known: forward, backward"):
        module.source("sgd_step")


def test_every_numpy_form_has_a_torch_form() -> None:
    """One record per function: each NumPy form has a torch form with the same values."""
    import scipy.special

    assert set(NUMPY_FORMS) <= set(TORCH_FORMS)
    x = torch.tensor([-2.0, -0.0, 0.0, 0.3, 0.5, 3.0, 40.0], dtype=torch.float64)
    for fn, form in TORCH_FORMS.items():
        name, before, after = NUMPY_FORMS[fn]
        ufunc = scipy.special.expit if name.startswith("scipy") else getattr(np, name[6:])
        with np.errstate(all="ignore"):
            expected = ufunc(*map(float, before), x.numpy(), *map(float, after))
        got = eval(form.format("x"), {"torch": torch, "x": x})
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-15, err_msg=str(fn))


def test_no_host_device_copies_in_the_generated_code() -> None:
    """Nothing in forward or backward reads a value to the host or moves a tensor."""
    for spec in ARCHS:
        module = to_torch(spec)
        for name in TORCH_KERNELS:
            src = module.source(name).split('"""')[2]
            for bad in (".item(", ".cpu(", ".cuda(", ".numpy(", ".tolist(", "float(", "int("):
                assert bad not in src, (name, bad)
            assert "device=" not in src.replace("device=X.device", "")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_runs_without_synchronising() -> None:
    spec = ARCHS[1]
    params = random_params(spec)
    X, Y = data(spec)
    module = to_torch(spec, device="cuda", params=params)
    Xc, Yc = torch.tensor(X, device="cuda"), torch.tensor(Y, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        J = module(Xc, Yc)
        J.backward()
        module(Xc).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _, ref, _ = autograd_reference(spec, params, X, Y)
    module.zero_grad()
    module(Xc, Yc).backward()
    for (W, b), (gW, gb) in zip(module.pairs(), ref, strict=True):
        close(W.grad.cpu(), gW)
        close(b.grad.cpu(), gb)


def test_bad_arguments_are_named() -> None:
    spec = ARCHS[0]
    with pytest.raises(ValueError, match=r"dtype must be torch\.float64 or torch\.float32"):
        to_torch(spec, dtype=torch.int32)
    with pytest.raises(TypeError, match=r"spec must be a lagrange_bp\.NetworkSpec"):
        to_torch("4-6-3")  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            to_torch(spec, device="cuda")
    with pytest.raises(ValueError, match=r"W\^2 must have shape \(3, 6\)"):
        to_torch(spec, params=[(np.zeros((6, 4)), np.zeros(6)), (np.zeros((6, 3)), np.zeros(3))])
    module = to_torch(spec)
    X, Y = data(spec)
    with pytest.raises(ValueError, match=r"X must have shape \(B, 4\) with B ≥ 1, got \(9, 2\)"):
        module(X[:, :2])
    with pytest.raises(ValueError, match="X and Y must have the same number of rows"):
        module(X, Y[:3])
    for scale in (2.0, 0.5, 1 + 2e-6, 1 - 2e-6):  # rows summing to more, or less, than 1
        with pytest.raises(ValueError, match="each row must sum to 1 for cross_entropy"):
            module(X, scale * Y)
    module(X, (1 + 5e-7) * Y)  # within 1e-6 of 1: taken
    for row in (0, 4, len(Y) - 1):  # first, middle, last row: min and max skip a NaN there
        nan_row = Y.copy()
        nan_row[row, 0] = float("nan")
        with pytest.raises(ValueError, match="each row must sum to 1 for cross_entropy"):
            module(X, nan_row)  # NaN compares false: refused, not let through


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, lagrange_bp; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_package_says_to_install_torch_when_it_is_absent() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import lagrange_bp as lbp\n"
        "try:\n"
        "    lbp.to_torch(lbp.NetworkSpec((2, 1), 'identity'))\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert "pip install torch" in done.stdout, done.stderr


def _example() -> Any:
    sys.path.insert(0, str(ROOT / "examples"))
    import ddp_digits

    return ddp_digits


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """One of the processes: gloo on localhost, the example's DDP training, rank 0 saves."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _example().run(epochs=2)
        if rank == 0:
            np.savez(out, *[a for pair in result.params for a in pair])
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_on_two_processes_equals_one_process(tmp_path: Path) -> None:
    """2 gloo processes, DDP, digits for 2 epochs with each global batch split across the
    ranks: the parameters of one process with the same global batches, to 1e-10; and those of
    lbp.train with the NumPy kernels."""
    import torch.multiprocessing as mp

    out = tmp_path / "ddp.npz"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = np.load(out)
    one = _example().run(epochs=2)
    flat = [a for pair in one.params for a in pair]
    for i, a in enumerate(flat):
        np.testing.assert_allclose(ddp[f"arr_{i}"], a, rtol=0, atol=1e-10)
    from lagrange_bp.datasets import load

    data = load("digits")
    spec = _example().SPEC
    numpy_run = lbp.train(lbp.compile(spec), data.X_train, data.Y_train, 2, 32, 0.1, seed=0)
    for (W, b), (Wn, bn) in zip(one.params, numpy_run.params, strict=True):
        np.testing.assert_allclose(W, Wn, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b, bn, rtol=0, atol=1e-10)
    assert one.history["train_loss"] == pytest.approx(numpy_run.history["train_loss"], rel=1e-10)


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lagrange_bp", *argv], cwd=cwd, capture_output=True, text=True
    )


def test_cli_backend_torch_trains_the_same_network(tmp_path: Path) -> None:
    """train --backend torch: the exported module with torch.optim gives the NumPy run's table."""
    args = ("train", "--dataset", "digits", "--widths", "64,32,10", "--epochs", "2")
    runs = [_cli(*args, *extra, cwd=tmp_path) for extra in ((), ("--backend", "torch"))]
    for done in runs:
        assert done.returncode == 0, done.stderr
    numpy_out, torch_out = (d.stdout.split("time ")[0] for d in runs)
    assert torch_out == numpy_out and "accuracy" in torch_out
    if not torch.cuda.is_available():
        done = _cli(*args, "--backend", "torch", "--device", "cuda", cwd=tmp_path)
        assert done.returncode == 2 and "sees no CUDA GPU" in done.stderr
    done = _cli(*args, "--device", "cuda", cwd=tmp_path)
    assert done.returncode == 2 and "--device needs --backend torch" in done.stderr
