"""Step 9: the derived equations on PyTorch — a ``torch.nn.Module`` whose backward is the adjoint.

``to_torch(spec)`` prints the same generic-layer blocks as the NumPy kernels (``kernels.Assembler``)
with the printer's PyTorch backend (``codegen.TorchPrinter``) into five functions, compiled as
the NumPy kernels are: ``forward`` (X^N and what the backward reads), ``backward`` (from the
gradient torch passes back, Λ^N = −∂J/∂X^N, then G^N = Dσ(Z^N)ᵀ Λ^N by the output record's
vjp, Λ^{k-1} = G^k W^k and ∂L/∂W^k, ∂L/∂b^k), ``loss_forward`` and ``loss_backward`` (the
spec's own J with Λ^N = −(1/B) ∇ℓ substituted into G^N, as the NumPy kernels fuse it) and
``adjoint`` (λ^1..λ^N). Two ``torch.autograd.Function`` classes run them, so torch's autograd
only calls the derived backward. Layout as the NumPy model: samples are rows, W^k (n_k, n_{k-1}),
b^k (n_k,), parameters ``W1, b1, …`` (CONVENTIONS §2). Imported only by ``lbp.to_torch``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
from sympy import MatrixSymbol

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised where torch is absent
    raise ImportError(
        "lagrange_bp.to_torch needs PyTorch, which is not installed: pip install torch "
        "(the CPU or a CUDA build, see https://pytorch.org)"
    ) from exc

from .codegen import TorchPrinter, compile_source
from .functions import get_loss
from .generic import LAYER, N_K, N_NEXT
from .kernels import ROWS, Assembler, Block, LayerCode, rows, vjp_label
from .matrices import BATCH
from .spec import NetworkSpec

TORCH_KERNELS = ("forward", "backward", "loss_forward", "loss_backward", "adjoint")
NAMESPACE = {"torch": torch, "math": math}
DTYPES = {"float64": torch.float64, "float32": torch.float32}


class TorchAssembler(Assembler):
    """The NumPy kernels' assembler with the PyTorch printer, plus the blocks only the torch
    backward needs: Λ^N from the gradient torch passes back and the output layer's general
    G^N, and Λ^0 = G^1 W^1 for an input that requires grad. Its tensors are made, not
    buffers: G^k has a tensor of its own."""

    G_IN_Z = False

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__(spec)
        self.printer: TorchPrinter = TorchPrinter({}, self.buffers, {})
        self.printer.held = tuple(f"W{k}" for k in range(1, spec.depth + 1))  # params unpacks them
        self.output_general: list[Block] = []
        self.previous = ""  # the array the last block wrote

    def block(self, label: str, out: str, expr: sp.Basic, scratch: tuple[str, ...] = ()) -> Block:
        """A block; X^k = σ(Z^k) in Z^k's tensor (every kernel runs it right after Z^k's
        block, which made that tensor) is computed in place."""
        if label.startswith(f"X^{out[1:]} =") and out == self.previous:
            self.printer.carry = {out}
        self.previous = out
        return super().block(label, out, expr, scratch)

    def layer(self, k: int) -> LayerCode:
        code = super().layer(k)  # leaves the printer's names and sizes at layer k's
        if k == self.spec.depth:
            self.output_general = self.general_output(k)
        return code

    def general_output(self, n: int) -> list[Block]:
        """Λ^N = −∂J/∂X^N (``grad``, what torch passes back), G^N = Dσ(Z^N)ᵀ Λ^N."""
        act, names = self.acts[n - 1], self.printer.names
        Z, X, Lam = MatrixSymbol("Z", BATCH, N_K), rows(LAYER.X, "X"), rows(LAYER.Lam, "Λ")
        D = MatrixSymbol("D", BATCH, N_K)
        names[D] = "grad"
        self.buffers.external["grad"] = ("B", self.spec.widths[n])
        G = act.kernel_vjp(Z, X, Lam, ROWS)
        if G.has(Z) and names[Z] == names[X]:
            raise AssertionError(f"G^{n} reads Z^{n}, which X^{n} overwrote")
        label = f"Λ^{n} = −∂J/∂X^{n}: the gradient torch passes back, negated"
        return [self.block(label, f"lam{n}", -D), self.block(vjp_label(act, n), f"g{n}", G)]

    def input_adjoint(self) -> Block:
        """Λ^0 = G^1 W^1: the adjoint equation at k = 0, for ∂J/∂X^0 = −Λ^0."""
        s, w = LAYER, self.spec.widths
        Gn = rows(s.G_next, "Gn")
        rhs = sp.transpose(self.g.adjoint.rhs.xreplace({s.G_next: Gn.T})).doit()
        self.printer.names = {Gn: "g1", s.W_next: "W1"}
        self.printer.sizes = {N_K: w[0], N_NEXT: w[1]}
        self.buffers.declare("lam0", ("B", w[0]))
        return self.block("Λ^0 = G^1 W^1 (∂J/∂X^0 = −Λ^0)", "lam0", rhs)


@dataclass
class TorchKernel:
    """A generated PyTorch function and its source."""

    name: str
    source: str
    fn: Callable[..., Any]


SIGNATURES = {
    "forward": ("params, X", "(X^N, saved): the forward pass and what backward reads"),
    "backward": (
        "params, X, saved, grad, need_x",
        "((∂L/∂W^1, ∂L/∂b^1, …, ∂L/∂b^N), ∂J/∂X or None) from grad = ∂J/∂X^N",
    ),
    "loss_forward": ("params, X, Y", "(J, saved): J = (1/B) Σ ℓ(y, x^N)"),
    "loss_backward": (
        "params, X, Y, saved, grad, need_x",
        "(grad · (∂L/∂W^1, …, ∂L/∂b^N), grad · ∂J/∂X or None) for the scalar grad = ∂out/∂J",
    ),
    "adjoint": ("params, X, Y", "[Λ^1, …, Λ^N]: the multipliers at the KKT point"),
}


def _text(blocks: Sequence[Block | str]) -> str:
    return "\n".join(line for b in blocks for line in (b.lines if isinstance(b, Block) else [b]))


def _assigned(blocks: Sequence[Block | str]) -> list[str]:
    """The names the statements of ``blocks`` assign, in order of first assignment."""
    names = re.findall(r"^(\w+) = ", _text(blocks), re.M)
    return list(dict.fromkeys(names))


def _function(name: str, spec: NetworkSpec, blocks: Sequence[Block | str]) -> str:
    """One kernel's source: signature, docstring listing its equations, the statements."""
    args, returns = SIGNATURES[name]
    unpack = ", ".join(f"W{k}, b{k}" for k in range(1, spec.depth + 1))
    equations = [b.label for b in blocks if isinstance(b, Block)]
    lines = [
        f"def {name}({args}):",
        f'    """{name}({args}) -> {returns}.',
        "",
        f"    Generated by lagrange_bp for {spec.describe()} from the derived KKT equations,",
        "    for PyTorch: samples are rows, X (B, n_0), x1 (B, n_1) is X^1ᵀ; W^k (n_k, n_(k-1));",
        "    params = (W^1, b^1, …, W^N, b^N), the module's parameters in order.",
        "    Equations, in order:",
        *[f"      {label}" for label in equations],
        '    """',
        f"    {unpack}, = params",
        "    B = X.shape[0]",
    ]
    if re.search(r"\bzero\b", _text(blocks)):
        lines.append("    zero = X.new_zeros(())  # the ignored input of addmm(beta=0)")
    indent = "    "
    for b in blocks:
        if isinstance(b, Block):
            lines.append(f"{indent}# {b.label}")
            lines += [f"{indent}{line}" for line in b.lines]
        elif b == "if need_x:":
            lines.append(f"    {b}")
            indent = "        "
        else:
            lines.append(f"    {b}" if b.startswith("return") else f"{indent}{b}")
    return "\n".join(lines) + "\n"


def build_torch_kernels(spec: NetworkSpec) -> dict[str, TorchKernel]:
    """Print and compile forward, backward, loss_forward, loss_backward and adjoint for torch."""
    asm = TorchAssembler(spec)
    layers = asm.build()
    lam0 = asm.input_adjoint()
    n = spec.depth
    assert asm.loss_block is not None
    forward: list[Block | str] = [b for k in range(1, n + 1) for b in layers[k].forward]
    loss: list[Block | str] = [asm.loss_block]
    if spec.weight_decay:
        norms = " + ".join(f"torch.sum(W{k} * W{k})" for k in range(1, n + 1))
        loss.append(f"loss = loss + {float(spec.weight_decay) / 2!r} * ({norms})")

    def backward(per_layer: str | None) -> list[Block | str]:
        """Per layer k = N..1: Λ^{k-1} and G^{k-1}, then the layer's gradient blocks."""
        body: list[Block | str] = []
        for k in range(n, 0, -1):
            if k > 1:
                body += layers[k - 1].adjoint + layers[k - 1].vjp
            body += getattr(layers[k], per_layer) if per_layer else []
        return body

    grads = "(" + ", ".join(f"gW{k}, gb{k}" for k in range(1, n + 1)) + ",)"
    tail: list[Block | str] = ["grad_X = None", "if need_x:", lam0, "grad_X = -lam0"]
    tail.append(f"return {grads}, grad_X")
    general = [*asm.output_general, *backward("grads"), *tail]
    # the chain rule for the scalar torch passes back, d(cJ) = c dJ: G^N scaled, or with weight
    # decay (whose α W^k does not pass through G^N) every gradient at the end
    if spec.weight_decay:
        rescale = [f"{g}{k} = {g}{k} * grad" for k in range(1, n + 1) for g in ("gW", "gb")]
        scaled = [*tail[:3], "grad_X = -lam0 * grad", *tail[4:]]
        fused = [*layers[n].vjp, *backward("grads"), *rescale, *scaled]
    else:
        fused = [*layers[n].vjp, f"g{n} = g{n} * grad", *backward("grads"), *tail]
    lams = "[" + ", ".join(f"lam{k}" for k in range(1, n + 1)) + "]"
    adjoint = [*forward, *layers[n].adjoint, *layers[n].vjp, *backward(None), f"return {lams}"]
    saved = {"forward": _saved(forward, general), "loss_forward": _saved(forward + loss, fused)}
    bodies: dict[str, list[Block | str]] = {
        "forward": [*forward, f"return {asm.x_name[n]}, ({saved['forward']})"],
        "backward": [*_unpack(saved["forward"]), *general],
        "loss_forward": [*forward, *loss, f"return loss, ({saved['loss_forward']})"],
        "loss_backward": [*_unpack(saved["loss_forward"]), *fused],
        "adjoint": adjoint,
    }
    kernels = {}
    for name, blocks in bodies.items():
        source = _function(name, spec, blocks)
        kernels[name] = TorchKernel(name, source, compile_source(name, source, NAMESPACE))
    return kernels


def _unpack(names: str) -> list[Block | str]:
    return [f"{names} = saved"] if names else []


def _saved(before: list[Block | str], after: list[Block | str]) -> str:
    """The names ``before`` assigns that ``after`` reads, as a tuple's text ("x1, z2,")."""
    text = _text(after)
    names = [v for v in _assigned(before) if re.search(rf"\b{v}\b", text)]
    return "".join(f"{v}," if i == len(names) - 1 else f"{v}, " for i, v in enumerate(names))


Pairs = list[tuple[Any, Any]]


class DerivedForward(torch.autograd.Function):
    """X ↦ X^N; backward: the derived adjoint from Λ^N = −grad (any loss downstream)."""

    @staticmethod
    def forward(ctx: Any, kernels: dict[str, TorchKernel], X: Any, *flat: Any) -> Any:
        out, saved = kernels["forward"].fn(flat, X)
        ctx.kernels, ctx.n_saved = kernels, len(saved)
        ctx.save_for_backward(X, *flat, *saved)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        X, *rest = ctx.saved_tensors
        flat, saved = rest[: len(rest) - ctx.n_saved], rest[len(rest) - ctx.n_saved :]
        need_x = ctx.needs_input_grad[1]
        fn = ctx.kernels["backward"].fn
        grads, grad_X = fn(flat, X, saved, grad.contiguous(), need_x)
        return None, grad_X, *grads


class DerivedLoss(torch.autograd.Function):
    """(X, Y) ↦ J = (1/B) Σ ℓ(y, x^N); backward: G^N = Dσᵀ Λ^N with Λ^N = −(1/B)∇ℓ fused."""

    @staticmethod
    def forward(ctx: Any, kernels: dict[str, TorchKernel], X: Any, Y: Any, *flat: Any) -> Any:
        loss, saved = kernels["loss_forward"].fn(flat, X, Y)
        ctx.kernels, ctx.saved = kernels, saved  # intermediates, not inputs or outputs
        ctx.save_for_backward(X, Y, *flat)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        X, Y, *flat = ctx.saved_tensors
        need_x = ctx.needs_input_grad[1]
        fn = ctx.kernels["loss_backward"].fn
        grads, grad_X = fn(flat, X, Y, ctx.saved, grad, need_x)
        return None, grad_X, None, *grads


class TorchMLP(torch.nn.Module):
    """The spec's network as a torch Module: parameters W1, b1, …, W^k (n_k, n_{k-1}), b^k
    (n_k,); ``module(X)`` is X^N (B, n_N) and ``module(X, Y)`` the spec's J, each with the
    derived backward. Made by ``lbp.to_torch``."""

    def __init__(
        self, spec: NetworkSpec, kernels: dict[str, TorchKernel], params: Pairs, dtype: Any
    ) -> None:
        super().__init__()
        self.spec, self.kernels, self.dtype = spec, kernels, dtype
        self._loss = get_loss(spec.loss)  # its record: classification, text
        for k, (W, b) in enumerate(params, start=1):
            self.register_parameter(f"W{k}", torch.nn.Parameter(W))
            self.register_parameter(f"b{k}", torch.nn.Parameter(b))

    def extra_repr(self) -> str:
        return f"{self.spec.describe()}, {str(self.dtype).removeprefix('torch.')}"

    def pairs(self) -> Pairs:
        """[(W^1, b^1), …, (W^N, b^N)], the parameters in layer order."""
        n = self.spec.depth
        return [(getattr(self, f"W{k}"), getattr(self, f"b{k}")) for k in range(1, n + 1)]

    @property
    def device(self) -> Any:
        return self._parameters["W1"].device  # type: ignore[union-attr]

    def forward(self, X: Any, Y: Any = None) -> Any:
        """X^N for the rows of X (B, n_0); with targets Y (B, n_N), J = (1/B) Σ ℓ(y, x^N)."""
        X = self.tensor(X, "X", self.spec.widths[0])
        flat = self._parameters.values()  # W1, b1, W2, …: registration order
        if Y is None:
            if self.spec.weight_decay:
                raise ValueError(
                    "this spec's objective has weight decay, so its derived ∂L/∂W^k includes "
                    "α W^k: call module(X, Y) for J, or export a spec without weight_decay and "
                    "give the optimizer weight_decay instead"
                )
            return DerivedForward.apply(self.kernels, X, *flat)
        return DerivedLoss.apply(self.kernels, X, self.targets(X, Y), *flat)

    def loss(self, X: Any, Y: Any) -> Any:
        """J = (1/B) Σ ℓ(y, x^N), a 0-dim tensor whose backward is the fused derived adjoint."""
        return self(X, Y)

    def adjoint(self, X: Any, Y: Any) -> list[Any]:
        """[λ^1 (B, n_1), …, λ^N (B, n_N)]: the multipliers at the KKT point (= −∂J/∂x^k)."""
        X = self.tensor(X, "X", self.spec.widths[0])
        with torch.no_grad():
            flat = tuple(self._parameters.values())
            return list(self.kernels["adjoint"].fn(flat, X, self.targets(X, Y)))

    def source(self, kernel: str = "backward") -> str:
        """The generated source of a kernel: forward, backward, loss_forward, loss_backward,
        adjoint."""
        if kernel not in self.kernels:
            raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(self.kernels)}")
        return self.kernels[kernel].source

    def to_numpy(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The parameters as the NumPy model's list of (W^k, b^k) arrays (copies)."""
        return [
            (W.detach().cpu().numpy().copy(), b.detach().cpu().numpy().copy())
            for W, b in self.pairs()
        ]

    def from_numpy(self, params: Sequence[tuple[Any, Any]]) -> TorchMLP:
        """Load a NumPy model's list of (W^k, b^k) into the parameters, in place."""
        with torch.no_grad():
            for (W, b), (Wn, bn) in zip(self.pairs(), _check_params(self.spec, params)):
                W.copy_(torch.as_tensor(Wn, dtype=self.dtype))
                b.copy_(torch.as_tensor(bn, dtype=self.dtype))
        return self

    # --- checks at the boundary (shapes, dtype and device only: no reads of the values) -----
    def tensor(self, a: Any, name: str, width: int) -> Any:
        """a as a (B, width) tensor of the module's dtype on its device; arrays are converted,
        a tensor on another device is refused (no hidden copies)."""
        if not isinstance(a, torch.Tensor):
            try:
                a = torch.as_tensor(np.asarray(a, dtype=np.float64), device=self.device)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be a numeric (B, {width}) array: {exc}") from None
        if a.device != self.device:
            raise ValueError(
                f"{name} is on {a.device} but the module on {self.device}: move one of them "
                f"(module.to(device) or {name}.to(device))"
            )
        if a.ndim != 2 or a.shape[1] != width or a.shape[0] == 0:
            raise ValueError(
                f"{name} must have shape (B, {width}) with B ≥ 1, got {tuple(a.shape)}"
            )
        if a.dtype != self.dtype:
            if not (a.is_floating_point() or a.dtype in (torch.int32, torch.int64, torch.bool)):
                raise ValueError(f"{name} must be a real tensor, got dtype {a.dtype}")
            a = a.to(self.dtype)
        return a

    def targets(self, X: Any, Y: Any) -> Any:
        """Y (B, n_N) for X; for a classification loss on the CPU, rows that sum to 1."""
        Y = self.tensor(Y, "Y", self.spec.widths[-1])
        if Y.shape[0] != X.shape[0]:
            raise ValueError(
                f"X and Y must have the same number of rows (samples), got {len(X)} and {len(Y)}"
            )
        loss = self._loss
        if loss.classification and Y.is_cpu:  # elsewhere this would synchronise
            rows = Y.sum(dim=1).tolist()  # Σ_j Y_ij per sample, read back in one call
            # a NaN may escape min and max but not the sum, which is then NaN: refused
            low, high, total = min(rows), max(rows), sum(rows)
            if not (1.0 - 1e-6 <= low and high <= 1.0 + 1e-6 and total == total):
                raise ValueError(
                    f"Y: each row must sum to 1 for {loss.text} (one-hot or probabilities; "
                    "torch.nn.functional.one_hot(labels, n).to(dtype) makes them), since the "
                    "fused output term G^N = (Y − X^N)/B assumes it"
                )
        return Y


def _check_params(spec: NetworkSpec, params: Sequence[tuple[Any, Any]]) -> Pairs:
    """params as (W^k (n_k, n_{k-1}), b^k (n_k,)) arrays; ValueError names a wrong one."""
    n, w = spec.depth, spec.widths
    if not isinstance(params, Sequence) or len(params) != n:
        raise ValueError(f"params must be a list of {n} (W, b) pairs, one per layer")
    out = []
    for k, pair in enumerate(params, start=1):
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"params[{k - 1}] must be a pair (W^{k}, b^{k})")
        for a, name, shape in zip(pair, (f"W^{k}", f"b^{k}"), ((w[k], w[k - 1]), (w[k],))):
            arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            if arr.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} contains NaN or inf")
        out.append((pair[0], pair[1]))
    return out


def _init_params(spec: NetworkSpec, seed: int) -> Pairs:
    """``Model.init_params(seed)`` (float64) without generating the NumPy kernels."""
    from .model import Model

    bare = Model.__new__(Model)  # init_params reads only spec and dtype
    bare.spec, bare.dtype = spec, np.dtype("float64")
    return bare.init_params(seed)


def _dtype(dtype: Any) -> Any:
    if dtype is None:
        return torch.float64
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in DTYPES.values():
        return dtype
    raise ValueError(
        f"dtype must be torch.float64 or torch.float32 (or 'float64', 'float32'), got {dtype!r}"
    )


def _device(device: Any) -> Any:
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda': {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine's PyTorch sees no CUDA GPU")
    return dev


def to_torch(
    spec: NetworkSpec,
    dtype: Any = torch.float64,
    device: Any = None,
    *,
    seed: int = 0,
    params: Sequence[tuple[Any, Any]] | None = None,
) -> TorchMLP:
    """The spec as a ``torch.nn.Module`` whose forward and backward are printed from the
    derived equations; parameters ``model.init_params(seed)`` of the NumPy model, or ``params``."""
    if not isinstance(spec, NetworkSpec):
        raise TypeError(f"spec must be a lagrange_bp.NetworkSpec, got {type(spec).__name__}")
    dtype, dev = _dtype(dtype), _device(device)
    if params is None:
        params = _init_params(spec, seed)
    start = [
        tuple(torch.as_tensor(np.array(a, dtype=np.float64), dtype=dtype, device=dev) for a in p)
        for p in _check_params(spec, params)
    ]
    return TorchMLP(spec, build_torch_kernels(spec), start, dtype)  # type: ignore[arg-type]


def _optimizer(name: str, params: Any, lr: float, momentum: float, betas: Any, eps: float) -> Any:
    """torch.optim's form of each update rule of ``optimizers`` (the names of ``lbp.train``)."""
    rules = {
        "sgd": lambda: torch.optim.SGD(params, lr=lr),
        "momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=momentum),
        "nesterov": lambda: torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True),
        "adam": lambda: torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps),
    }
    if name not in rules:
        raise ValueError(f"optimizer must be one of {', '.join(rules)}, got {name!r}")
    return rules[name]()


def _shard(rows: int, rank: int, world: int) -> tuple[slice, float]:
    """This rank's contiguous part of a global batch of ``rows`` rows, and the factor
    world·B_r/B that makes DDP's mean over ranks the gradient of the global batch mean (0 for
    a rank left without rows, which then runs on one row so that every rank takes part)."""
    bounds = np.linspace(0, rows, world + 1).round().astype(int)
    start, stop = int(bounds[rank]), int(bounds[rank + 1])
    if stop == start:
        return slice(0, 1), 0.0
    return slice(start, stop), world * (stop - start) / rows


def fit(
    net: Any,
    X: Any,
    Y: Any,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 0.1,
    seed: int = 0,
    *,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    validation: tuple[Any, Any] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> Any:
    """``lbp.train``'s algorithm on the exported module with ``torch.optim``: the same seeded
    shuffles and mini-batches, so float64 SGD ends with ``lbp.train``'s parameters. ``net`` is a
    ``TorchMLP`` or a ``DistributedDataParallel`` wrapping one: then every rank takes its part
    of each global batch and DDP averages the gradients, giving one process's parameters."""
    from .train import TrainResult

    ddp = isinstance(net, torch.nn.parallel.DistributedDataParallel)
    module: TorchMLP = net.module if ddp else net
    if not isinstance(module, TorchMLP):
        raise TypeError(f"net must be a module from lbp.to_torch, got {type(module).__name__}")
    rank = torch.distributed.get_rank() if ddp else 0
    world = torch.distributed.get_world_size() if ddp else 1
    X = module.tensor(X, "X", module.spec.widths[0])
    Y = module.targets(X, Y)
    opt = _optimizer(optimizer, net.parameters(), lr, momentum, betas, eps)
    rng, n = np.random.default_rng(seed), len(X)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "seconds": []}
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.as_tensor(rng.permutation(n), device=module.device)
        Xs, Ys = X[order], Y[order]
        total = torch.zeros((), dtype=module.dtype, device=module.device)
        for start in range(0, n, batch_size):
            Xb, Yb = Xs[start : start + batch_size], Ys[start : start + batch_size]
            part, factor = _shard(len(Xb), rank, world)
            opt.zero_grad(set_to_none=True)
            J = net(Xb[part], Yb[part])
            (J * factor if ddp else J).backward()
            opt.step()
            total += J.detach() * (len(Xb[part]) if factor else 0)
        if ddp:
            torch.distributed.all_reduce(total)
        metrics = {"epoch": float(epoch), "train_loss": float(total) / n}
        if not math.isfinite(metrics["train_loss"]):
            from .train import TrainingDiverged

            raise TrainingDiverged(f"training diverged at epoch {epoch} (lr {lr:g})")
        if validation is not None:
            metrics |= {f"val_{k}": v for k, v in evaluate(module, *validation).items()}
        metrics["seconds"] = time.perf_counter() - t0
        for key in metrics:
            history.setdefault(key, []).append(metrics[key])
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return TrainResult(module.to_numpy(), history, time.perf_counter() - t0, {})


def evaluate(module: TorchMLP, X: Any, Y: Any) -> dict[str, float]:
    """J on (X, Y), and accuracy for a classification loss, as ``lbp.evaluate`` gives them."""
    X = module.tensor(X, "X", module.spec.widths[0])
    Y = module.targets(X, Y)
    with torch.no_grad():
        out = {"loss": float(module(X, Y))}
        if get_loss(module.spec.loss).classification:
            hits = module(X).argmax(dim=1) == Y.argmax(dim=1)
            out["accuracy"] = float(hits.double().mean())
    return out
