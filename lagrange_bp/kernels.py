"""Step 6b: assemble one network's kernels from the generic-layer equations.

For each layer k the generic equations of ``general.derive_general`` (σ made concrete) are
moved to the rows layout and printed by ``codegen.Emitter``; the statements of all layers form
four functions: ``forward``, ``adjoint``, ``loss_and_grad`` and ``sgd_step``. Where the
derivative σ' can be written in the layer's output (tanh: 1 − x², sigmoid: x(1 − x)), the
forward constraint X^k = σ(Z^k) is used to do so, and Z^k shares X^k's buffer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
from sympy import MatrixSymbol
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .codegen import Buffers, Emitter, compile_source, row_symbol
from .functions import X_VAR, Y_VAR, get_activation, loss_expression
from .general import (
    N_K,
    N_NEXT,
    N_PREV,
    SIGMA_K,
    B,
    GeneralDerivation,
    S,
    U,
    derive_general,
    output_adjoint_for,
    vjp_for,
)
from .spec import NetworkSpec

ETA = sp.Symbol("eta")
KERNELS = ("forward", "adjoint", "loss_and_grad", "sgd_step", "loss")


@dataclass
class Kernel:
    """A generated function, its source, and the SymPy equations it was printed from."""

    name: str
    source: str
    equations: list[tuple[str, sp.Basic]]
    fn: Callable[..., Any]
    buffer_names: list[str]  # the preallocated arrays it unpacks from ``buf``, in order


@dataclass
class LayerCode:
    """The statements of one layer, by role, and the SymPy expressions they print."""

    forward: list[str] = field(default_factory=list)
    adjoint: list[str] = field(default_factory=list)  # λ^k
    vjp: list[str] = field(default_factory=list)  # G^k
    grads: list[str] = field(default_factory=list)  # ∂L/∂W^k, ∂L/∂b^k
    update: list[str] = field(default_factory=list)  # W^k ← W^k − η ∂L/∂W^k
    equations: list[tuple[str, sp.Basic]] = field(default_factory=list)


def _concrete(expr: sp.Basic, activation: str) -> sp.Basic:
    """Replace the abstract σ_k by the layer's activation."""
    act = get_activation(activation)
    return expr.replace(
        lambda e: isinstance(e, sp.Function) and e.func == SIGMA_K, lambda e: act.of(e.args[0])
    )


def _in_outputs(vjp: sp.MatrixExpr, activation: str, Z: MatrixSymbol) -> tuple[sp.MatrixExpr, bool]:
    """Rewrite σ'(Z) as a function of X = σ(Z) where SymPy's σ' is a polynomial in σ."""
    act = get_activation(activation)
    if act.custom:
        return vjp, False
    fn = act.function

    def rewrite(e: ElementwiseApplyFunction) -> sp.Basic:
        body = e.function.expr
        if fn is None:
            return ElementwiseApplyFunction(sp.Lambda(U, body), S.X)
        new = body.xreplace({fn(U): U})
        if new.has(U) and not body.has(fn(U)):
            return e
        return ElementwiseApplyFunction(sp.Lambda(U, new), S.X)

    out = vjp.replace(lambda e: isinstance(e, ElementwiseApplyFunction) and e.expr == Z, rewrite)
    return out, not out.has(Z)


class Assembler:
    """Builds the statements of every layer with one buffer registry and one name table."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.g: GeneralDerivation = derive_general()
        self.buffers = Buffers()
        self.layers: dict[int, LayerCode] = {}
        self.x_name: dict[int, str] = {0: "X"}

    def layer(self, k: int) -> LayerCode:
        spec, g, w = self.spec, self.g, self.spec.widths
        act = spec.activations[k - 1]
        n = spec.depth
        sizes = {N_PREV: w[k - 1], N_K: w[k], N_NEXT: w[k + 1] if k < n else 1}
        Z = MatrixSymbol("Z^k", N_K, B)
        fused = k == n and spec.loss == "cross_entropy"
        vjp_col = g.fused_softmax_ce.rhs if fused else vjp_for(act).rhs.xreplace({S.Z: Z})
        vjp_col, no_z = _in_outputs(vjp_col, act, Z) if act != "softmax" else (vjp_col, True)
        z, x = f"z{k}", (f"z{k}" if no_z and act != "softmax" else f"x{k}")
        self.x_name[k] = x
        rows = {
            M: row_symbol(M, name)
            for M, name in [
                (S.X_prev, "Xp"),
                (S.X, "X"),
                (S.Lam, "L"),
                (S.G, "G"),
                (S.G_next, "Gn"),
                (S.Y, "Y"),
                (S.b, "b"),
                (Z, "Z"),
            ]
        }
        names = {
            rows[S.X_prev]: self.x_name[k - 1],
            rows[S.X]: x,
            rows[S.Lam]: f"lam{k}",
            rows[S.G]: f"g{k}",
            rows[S.G_next]: f"g{k + 1}",
            rows[S.Y]: "Y",
            rows[S.b]: f"b{k}",
            rows[Z]: z,
            S.W: f"W{k}",
            S.W_next: f"W{k + 1}",
        }
        for name, dim in ((z, N_K), (x, N_K), (f"lam{k}", N_K), (f"g{k}", N_K)):
            self.buffers.declare(name, ("B", int(dim.subs(sizes))))
        self.buffers.external |= {
            f"W{k}": (w[k], w[k - 1]),
            f"b{k}": (w[k],),
            "X": ("B", w[0]),
            "Y": ("B", w[-1]),
        }

        def R(e: sp.Basic) -> sp.MatrixExpr:  # to the rows layout
            return sp.transpose(e.xreplace({M: r.T for M, r in rows.items()})).doit()

        def emit(out: str, e: sp.MatrixExpr, label: str) -> list[str]:
            em = Emitter(dict(names), self.buffers, sizes)
            em.assign(out, e)
            code.equations.append((label, e))
            return em.lines

        code = LayerCode()
        if act == "softmax":
            code.forward = emit(z, R(S.Z), f"Z^{k} = X^{k - 1} W^{k}ᵀ + 1 b^{k}ᵀ")
            r = self.buffers.declare(f"r{k}", ("B", 1))
            code.forward += [
                f"np.max({z}, axis=1, keepdims=True, out={r})",
                f"np.subtract({z}, {r}, out={x})",
                f"np.exp({x}, out={x})",
                f"np.sum({x}, axis=1, keepdims=True, out={r})",
                f"np.divide({x}, {r}, out={x})",
            ]
            code.equations.append((f"X^{k} = softmax(Z^{k}) by rows", sp.Symbol("softmax")))
        else:
            fwd = _concrete(g.forward.rhs, act).xreplace({S.Z: Z})
            code.forward = emit(z, R(S.Z), f"Z^{k} = X^{k - 1} W^{k}ᵀ + 1 b^{k}ᵀ")
            code.forward += emit(x, R(fwd), f"X^{k} = σ_{k}(Z^{k})") if fwd != Z else []
        if k == n:
            code.adjoint = emit(f"lam{k}", R(output_adjoint_for(spec.loss).rhs), f"Λ^{k} (output)")
        else:
            code.adjoint = emit(f"lam{k}", R(g.adjoint.rhs), f"Λ^{k} = W^{k + 1}ᵀ G^{k + 1}")
        code.vjp = emit(f"g{k}", R(vjp_col), f"G^{k}" + (" (fused softmax–CE)" if fused else ""))
        gW, gb = (
            self.buffers.declare(f"gW{k}", (w[k], w[k - 1])),
            self.buffers.declare(f"gb{k}", (w[k],)),
        )
        dW = sp.transpose(R(g.weight_gradient.rhs)).doit()  # W keeps its (n_k, n_{k-1}) shape
        db = R(g.bias_gradient.rhs)  # a row: the array b^k of shape (n_k,)
        code.grads = emit(gW, dW, f"∂L/∂W^{k}") + emit(gb, db, f"∂L/∂b^{k}")
        code.update = emit(f"W{k}", (S.W - ETA * dW).doit(), f"W^{k} ← W^{k} − η ∂L/∂W^{k}") + emit(
            f"b{k}", (rows[S.b] - ETA * db).doit(), f"b^{k} ← b^{k} − η ∂L/∂b^{k}"
        )
        return code

    def build(self) -> dict[int, LayerCode]:
        for k in range(1, self.spec.depth + 1):
            self.layers[k] = self.layer(k)
        return self.layers


def loss_lines(spec: NetworkSpec, asm: Assembler) -> list[str]:
    """J = (1/B) Σ_i ℓ(y_i, x^N_i) into the local ``loss``, printed stably.

    mse: ½ Σ (x^N − y)² / B.  Cross-entropy after softmax: −Σ y ⊙ log softmax(z^N) / B with
    log softmax(z) = (z − max z) − log Σ exp(z − max z), finite for any finite z.
    """
    n, w = spec.depth, spec.widths
    x, z = asm.x_name[n], f"z{n}"
    t = asm.buffers.declare("loss_t", ("B", w[-1]))
    if spec.loss == "mse":
        return [f"np.subtract({x}, Y, out={t})", f"loss = 0.5 * float(np.vdot({t}, {t})) / B"]
    f = loss_expression(spec.loss)
    if f is not None:  # a user's Σ_j f(x_j, y_j)
        em = Emitter({}, asm.buffers, {})
        xs, ys = em.array(x), em.array("Y")
        em.elementwise(t, f.xreplace({X_VAR: xs, Y_VAR: ys}))
        return [*em.lines, f"loss = float(np.sum({t})) / B"]
    m = asm.buffers.declare("loss_m", ("B", 1))
    e = asm.buffers.declare("loss_e", ("B", w[-1]))
    return [
        f"np.max({z}, axis=1, keepdims=True, out={m})",
        f"np.subtract({z}, {m}, out={t})",
        f"np.exp({t}, out={e})",
        f"np.sum({e}, axis=1, keepdims=True, out={m})",
        f"np.log({m}, out={m})",
        f"np.subtract({t}, {m}, out={t})",
        f"loss = -float(np.vdot(Y, {t})) / B",
    ]


def _function(
    name: str, args: str, buffers: list[str], body: list[str], ret: str, n_layers: int
) -> str:
    unpack = ", ".join(f"(W{k}, b{k})" for k in range(1, n_layers + 1))
    lines = [f"def {name}({args}):", f"    {unpack}, = params", "    B = X.shape[0]"]
    if buffers:
        lines.append(f"    {', '.join(buffers)}, = buf")
    lines += [f"    {line}" for line in body]
    lines.append(f"    return {ret}")
    return "\n".join(lines) + "\n"


def build_kernels(spec: NetworkSpec) -> tuple[dict[str, Kernel], dict[str, tuple[int | str, ...]]]:
    """Generate and compile forward, adjoint, loss_and_grad and sgd_step for ``spec``."""
    asm = Assembler(spec)
    layers = asm.build()
    n = spec.depth
    fused = spec.loss == "cross_entropy"
    loss = loss_lines(spec, asm)
    forward = [line for k in range(1, n + 1) for line in layers[k].forward]

    def backward(per_layer: str | None, with_output_lam: bool) -> list[str]:
        """λ^N (if asked) and G^N, then per layer k = N..1: λ^{k-1}, G^{k-1} (from W^k before
        any update of W^k) and the layer's own statements (gradients or update)."""
        body = (layers[n].adjoint if with_output_lam else []) + layers[n].vjp
        for k in range(n, 0, -1):
            if k > 1:
                body += layers[k - 1].adjoint + layers[k - 1].vjp
            body += getattr(layers[k], per_layer) if per_layer else []
        return body

    adjoint_body = backward(None, True)
    bodies = {
        "forward": (forward, asm.x_name[n], "params, X, buf"),
        "adjoint": (
            forward + adjoint_body,
            "[" + ", ".join(f"lam{k}" for k in range(1, n + 1)) + "]",
            "params, X, Y, buf",
        ),
        "loss_and_grad": (
            forward + loss + backward("grads", not fused),
            "loss, [" + ", ".join(f"(gW{k}, gb{k})" for k in range(1, n + 1)) + "]",
            "params, X, Y, buf",
        ),
        "sgd_step": (forward + backward("update", not fused), "None", "params, X, Y, eta, buf"),
        "loss": (forward + loss, "loss", "params, X, Y, buf"),
    }
    names = sorted(asm.buffers.shapes)
    equations = [eq for k in range(1, n + 1) for eq in layers[k].equations]
    kernels = {}
    for name, (body, ret, args) in bodies.items():
        text = "\n".join(body) + "\n" + ret
        used = [b for b in names if re.search(rf"\b{b}\b", text)]
        src = _function(name, args, used, body, ret, n)
        fn = compile_source(name, src, {"np": np, "math": math})
        kernels[name] = Kernel(name, src, equations, fn, used)
    return kernels, asm.buffers.shapes
