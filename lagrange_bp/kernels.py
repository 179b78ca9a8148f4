"""Step 6b: assemble one network's kernels from the generic-layer equations and the records.

For each layer k the generic equations of ``generic.derive_generic`` — Z^k, Λ^k = W^{k+1ᵀ}G^{k+1},
∂L/∂W^k, ∂L/∂b^k, the update — are moved to the NumPy layout (samples are rows: the array x1 holds
X^1ᵀ, shape (B, n_1)) by SymPy's transpose; X^k = σ_k(Z^k), G^k and the loss come from the layer's
activation record and the loss record in the stable forms they print. Where the record has σ'
as a polynomial in σ (tanh: 1 − x²), G^k reads X^k, and Z^k shares X^k's buffer. Each block of
statements carries a comment naming its equation; the blocks form five functions: ``forward``,
``adjoint``, ``loss_and_grad``, ``sgd_step`` and ``loss``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy import MatrixSymbol

from .codegen import Buffers, KernelPrinter, compile_source
from .functions import Activation, Loss, get_activation, get_loss
from .generic import LAYER, N_K, N_NEXT, N_PREV, GenericDerivation, derive_generic
from .lagrangian import ALPHA
from .matrices import BATCH, Entrywise, entrywise
from .spec import NetworkSpec

ETA = sp.Symbol("eta")
ROWS = 1  # in the kernels a sample is a row: its entries run along axis 1
KERNELS = ("forward", "adjoint", "loss_and_grad", "sgd_step", "loss")


@dataclass
class Kernel:
    """A generated function, its source, and the SymPy equations it was printed from."""

    name: str
    source: str
    equations: list[tuple[str, sp.Basic]]
    fn: Callable[..., Any]
    buffer_names: list[str]  # the preallocated arrays it unpacks from ``buf``, in order
    constants: dict[float, sp.Basic]  # the exact value of every float literal in the source


@dataclass
class Block:
    """Statements computing one equation, and the equation as a comment and as SymPy."""

    label: str
    lines: list[str]
    expr: sp.Basic


@dataclass
class LayerCode:
    """The blocks of one layer, by role."""

    forward: list[Block] = field(default_factory=list)  # Z^k, X^k
    adjoint: list[Block] = field(default_factory=list)  # Λ^k
    vjp: list[Block] = field(default_factory=list)  # G^k
    grads: list[Block] = field(default_factory=list)  # ∂L/∂W^k, ∂L/∂b^k
    update: list[Block] = field(default_factory=list)  # W^k ← W^k − η ∂L/∂W^k, same for b^k


def rows(M: MatrixSymbol, name: str) -> MatrixSymbol:
    """The rows-layout array of a column-layout matrix symbol, as a MatrixSymbol."""
    return MatrixSymbol(name, M.shape[1], M.shape[0])


def body_text(e: sp.Basic) -> str:
    """An entrywise function's body in x (the first matrix's entry) and y, for a comment."""
    if isinstance(e, Entrywise):
        names = dict(zip(e.function.variables, (sp.Symbol("x"), sp.Symbol("y"), sp.Symbol("w"))))
        return sp.sstr(e.function.expr.xreplace(names))
    return sp.sstr(e)


class Assembler:
    """Builds every layer's blocks with one printer, one buffer registry and one name table.

    Where Z^k has a buffer of its own and G^k can be computed in it without a copy (σ'
    a chain of one-argument steps, as relu's step(z)), it is (Z^k is not read after G^k in
    any kernel), and g{k} names that array: one (B, n_k) buffer fewer per layer, which keeps
    a training step's arrays in cache (``G_IN_Z``; the PyTorch backend, whose tensors are
    not buffers, keeps its own)."""

    G_IN_Z = True

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.g: GenericDerivation = derive_generic(bool(spec.weight_decay))
        self.alpha = sp.Rational(spec.decay.numerator, spec.decay.denominator)
        self.acts: list[Activation] = [get_activation(a) for a in spec.activations]
        self.loss: Loss = get_loss(spec.loss)
        self.buffers = Buffers()
        self.printer = KernelPrinter({}, self.buffers, {})
        self.layers: dict[int, LayerCode] = {}
        self.x_name: dict[int, str] = {0: "X"}
        self.loss_block: Block | None = None

    def block(self, label: str, out: str, expr: sp.Basic, scratch: tuple[str, ...] = ()) -> Block:
        lines = self.printer.assign(out, expr, scratch)
        return Block(label if lines else f"{label}: {out} already holds it", lines, expr)

    def layer(self, k: int) -> LayerCode:
        g, w, n, s = self.g, self.spec.widths, self.spec.depth, LAYER
        act = self.acts[k - 1]
        sizes = {N_PREV: w[k - 1], N_K: w[k], N_NEXT: w[k + 1] if k < n else 1}
        Z = MatrixSymbol("Z", BATCH, N_K)
        X, Lam, Y = rows(s.X, "X"), rows(s.Lam, "Λ"), rows(s.Y, "Y")
        if k == n:
            G = act.kernel_output_vjp(self.loss, Z, X, Y, ROWS)
            terms = self.loss.kernel_terms(act, Z, X, Y, ROWS)
            needs_z = G.has(Z) or terms.has(Z)
        else:
            G = act.kernel_vjp(Z, X, Lam, ROWS)
            needs_z = G.has(Z)
        x = f"x{k}"
        z = f"z{k}" if needs_z else x  # Z^k only until X^k = σ(Z^k) overwrites it
        self.x_name[k] = x
        table = {
            s.X_prev: rows(s.X_prev, "Xp"),
            s.X: X,
            s.Lam: Lam,
            s.G: rows(s.G, "G"),
            s.G_next: rows(s.G_next, "Gn"),
            s.Y: Y,
            s.b: rows(s.b, "b"),
        }
        self.printer.names = {
            table[s.X_prev]: self.x_name[k - 1],
            X: x,
            Lam: f"lam{k}",
            table[s.G]: f"g{k}",
            table[s.G_next]: f"g{k + 1}",
            Y: "Y",
            table[s.b]: f"b{k}",
            Z: z,
            s.W: f"W{k}",
            s.W_next: f"W{k + 1}",
        }
        self.printer.sizes = sizes
        for name in {z, x, f"lam{k}"}:
            self.buffers.declare(name, ("B", w[k]))
        self.buffers.external |= {
            f"W{k}": (w[k], w[k - 1]),
            f"b{k}": (w[k],),
            "X": ("B", w[0]),
            "Y": ("B", w[-1]),
        }

        def to_rows(e: sp.Basic) -> sp.MatrixExpr:
            return sp.transpose(e.xreplace({M: r.T for M, r in table.items()})).doit()

        code = LayerCode()
        kept = f" (in {x}: Z^{k} is not needed once X^{k} = σ(Z^{k}))" if z == x else ""
        code.forward.append(
            self.block(f"Z^{k} = X^{k - 1} W^{k}ᵀ + 1 b^{k}ᵀ{kept}", z, to_rows(s.Z))
        )
        forward = act.kernel_forward(Z, ROWS)
        code.forward.append(self.block(_forward_label(act, k), x, forward))
        if k == n:
            self.buffers.declare("loss_terms", ("B", w[k]))
            label = f"J = (1/B) Σ_ij f(X^{k}_ij, Y_ij), f = {body_text(terms)}"
            lines, total = self.printer.total("loss_terms", terms)
            self.loss_block = Block(label, [*lines, f"loss = {total} / B"], terms)
            lam_n = entrywise(self.loss.kernel_adjoint_body(), X, Y)  # −(1/B) ∂f/∂x, stable
            code.adjoint.append(
                self.block(f"Λ^{k} = −(1/B) ∂ℓ/∂x(X^{k}, Y) = {body_text(lam_n)}", f"lam{k}", lam_n)
            )
            label = (
                f"G^{k} = Dσ(Z^{k})ᵀ Λ^{k} with Λ^{k} substituted: entrywise {body_text(G)}, "
                f"x from X^{k}, y from Y"
            )
        else:
            adjoint = to_rows(g.adjoint.rhs)
            code.adjoint.append(self.block(f"Λ^{k} = G^{k + 1} W^{k + 1}", f"lam{k}", adjoint))
            label = vjp_label(act, k)
        code.vjp.append(self.vjp_block(label, k, z if z != x else None, G))
        gW = self.buffers.declare(f"gW{k}", (w[k], w[k - 1]))
        gb = self.buffers.declare(f"gb{k}", (w[k],))
        dW = sp.transpose(to_rows(g.weight_gradient.rhs)).doit()  # W keeps its (n_k, n_{k-1})
        dW = dW.xreplace({ALPHA: self.alpha})
        db = to_rows(g.bias_gradient.rhs)  # a row: the array b^k of shape (n_k,)
        decay = f" + α W^{k}, α = {self.spec.weight_decay!r}" if self.spec.weight_decay else ""
        code.grads.append(self.block(f"∂L/∂W^{k} = −G^{k}ᵀ X^{k - 1}{decay}", gW, dW))
        code.grads.append(self.block(f"∂L/∂b^{k} = −1ᵀ G^{k}", gb, db))
        code.update.append(
            self.block(f"W^{k} ← W^{k} − η ∂L/∂W^{k}", f"W{k}", (s.W - ETA * dW).doit(), (gW,))
        )
        b_row = table[s.b]
        code.update.append(
            self.block(f"b^{k} ← b^{k} − η ∂L/∂b^{k}", f"b{k}", (b_row - ETA * db).doit(), (gb,))
        )
        return code

    def vjp_block(self, label: str, k: int, z: str | None, G: sp.Basic) -> Block:
        """G^k's block: in Z^k's buffer ``z`` (None: Z^k has none) where it needs no copy
        there, ``g{k}`` then naming that array; else in a buffer of its own."""
        if self.G_IN_Z and z is not None:
            copies, lines = self.printer.copies_back, len(self.printer.lines)
            block = self.block(f"{label} (in {z}: Z^{k} is not read after)", z, G)
            if self.printer.copies_back == copies:
                block.lines.append(f"g{k} = {z}")
                self.buffers.aliases[f"g{k}"] = z
                return block
            del self.printer.lines[lines:]  # printed again, into a buffer of its own
        self.buffers.declare(f"g{k}", self.buffers.shape_of(f"lam{k}"))
        return self.block(label, f"g{k}", G)

    def build(self) -> dict[int, LayerCode]:
        for k in range(1, self.spec.depth + 1):
            self.layers[k] = self.layer(k)
        return self.layers

    def decay_block(self) -> Block:
        """J += (α/2) Σ_k ‖W^k‖²: the objective's weight decay term (not derived: defined)."""
        n, w = self.spec.depth, self.spec.widths
        W = {f"W{k}": MatrixSymbol(f"W{k}", w[k], w[k - 1]) for k in range(1, n + 1)}
        return decay_block(self.printer, self.alpha, self.spec.weight_decay, W, "Σ_k ‖W^k‖²")


def decay_block(
    printer: KernelPrinter,
    alpha: sp.Rational,
    shown: float,
    weights: dict[str, MatrixSymbol],
    sum_text: str,
) -> Block:
    """``loss += (α/2) Σ vdot(W, W)`` over ``weights`` (array name → its matrix symbol), α
    exact (``shown`` as the spec writes it): the objective's weight decay term, defined, not
    derived; biases are not decayed."""
    norms = " + ".join(f"np.vdot({name}, {name})" for name in weights)
    return Block(
        f"J += (α/2) {sum_text}, α = {shown!r} (biases are not decayed)",
        [f"loss += {printer.scalar(alpha / 2)} * ({norms})"],
        alpha / 2 * sp.Add(*[sp.Trace(M.T * M) for M in weights.values()]),
    )


def _forward_label(act: Activation, k: int) -> str:
    if not act.elementwise:
        return f"X^{k} = {act.text}(Z^{k}) by samples (rows), after subtracting each row's max"
    if act.builtin:
        return f"X^{k} = {act.text}(Z^{k})"
    return f"X^{k} = σ_{k}(Z^{k}), σ_{k}(z) = {act.text}"


def vjp_label(act: Activation, k: int | str, sigma: str | None = None) -> str:
    """The comment of G^k's block (k a layer, or a graph's node with ``sigma`` "σ'")."""
    if not act.elementwise:
        return f"G^{k} = Dσ(Z^{k})ᵀ Λ^{k} = X^{k} ⊙ (Λ^{k} − rowsum(X^{k} ⊙ Λ^{k}))"
    s = f"σ'_{k}" if sigma is None else sigma
    form = getattr(act, "output_form", None)
    if form is not None:
        return f"G^{k} = {s}(Z^{k}) ⊙ Λ^{k}, {s} = {sp.sstr(form)} in x = X^{k}"
    return f"G^{k} = {s}(Z^{k}) ⊙ Λ^{k}, {s}(z) = {sp.sstr(act.derivative_form)}"  # type: ignore[attr-defined]


SIGNATURES = {
    "forward": ("params, X, buf", "X^N (B, n_N): the forward pass"),
    "adjoint": ("params, X, Y, buf", "[Λ^1, …, Λ^N]: the multipliers at the KKT point"),
    "loss_and_grad": ("params, X, Y, buf", "J and [(∂L/∂W^k, ∂L/∂b^k)], k = 1..N"),
    "sgd_step": ("params, X, Y, eta, buf", "J before the step; θ ← θ − η ∂L/∂θ in place on params"),
    "loss": ("params, X, Y, buf", "J = (1/B) Σ ℓ(y, x^N): the forward pass and the loss"),
}


def _function(name: str, spec: NetworkSpec, buffers: list[str], blocks: list[Block | str]) -> str:
    args, returns = SIGNATURES[name]
    n = spec.depth
    unpack = ", ".join(f"(W{k}, b{k})" for k in range(1, n + 1))
    equations = [b.label for b in blocks if isinstance(b, Block)]
    doc = [
        f'    """{name}({args}) -> {returns}.',
        "",
        f"    Generated by lagrange_bp for {spec.describe()} from the derived KKT equations.",
        "    Arrays hold samples as rows: X (B, n_0), x1 (B, n_1) is X^1ᵀ; W^k (n_k, n_(k-1)).",
        "    Equations, in order:",
        *[f"      {label}" for label in equations],
        '    """',
    ]
    lines = [f"def {name}({args}):", *doc, f"    {unpack}, = params", "    B = X.shape[0]"]
    if buffers:
        lines.append(f"    {', '.join(buffers)}, = buf")
    return "\n".join(lines + body_lines(blocks)) + "\n"


def body_lines(blocks: Sequence[Block | str]) -> list[str]:
    """A kernel's statements, indented: each block after a comment naming its equation."""
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Block):
            lines.append(f"    # {b.label}")
            lines += [f"    {line}" for line in b.lines]
        else:
            lines.append(f"    {b}")
    return lines


def build_kernels(spec: NetworkSpec) -> tuple[dict[str, Kernel], dict[str, tuple[int | str, ...]]]:
    """Generate and compile forward, adjoint, loss_and_grad, sgd_step and loss for ``spec``."""
    asm = Assembler(spec)
    layers = asm.build()
    n = spec.depth
    assert asm.loss_block is not None
    forward = [b for k in range(1, n + 1) for b in layers[k].forward]
    loss: list[Block | str] = [asm.loss_block]
    if spec.weight_decay:
        loss.append(asm.decay_block())

    def backward(per_layer: str | None) -> list[Block | str]:
        """G^N, then per layer k = N..1: Λ^{k-1} and G^{k-1} (from W^k before any update of
        W^k) and the layer's own blocks (gradients or update)."""
        body: list[Block | str] = list(layers[n].vjp)
        for k in range(n, 0, -1):
            if k > 1:
                body += layers[k - 1].adjoint + layers[k - 1].vjp
            body += getattr(layers[k], per_layer) if per_layer else []
        return body

    lams = "[" + ", ".join(f"lam{k}" for k in range(1, n + 1)) + "]"
    grads = "[" + ", ".join(f"(gW{k}, gb{k})" for k in range(1, n + 1)) + "]"
    bodies: dict[str, list[Block | str]] = {
        "forward": [*forward, f"return {asm.x_name[n]}"],
        "adjoint": [*forward, *layers[n].adjoint, *backward(None), f"return {lams}"],
        "loss_and_grad": [*forward, *loss, *backward("grads"), f"return loss, {grads}"],
        "sgd_step": [*forward, *loss, *backward("update"), "return loss"],
        "loss": [*forward, *loss, "return loss"],
    }
    return compile_bodies(
        bodies, asm.buffers, asm.printer.constants, lambda n, used, b: _function(n, spec, used, b)
    )


def compile_bodies(
    bodies: dict[str, list[Block | str]],
    buffers: Buffers,
    constants: dict[float, sp.Basic],
    function: Callable[[str, list[str], list[Block | str]], str],
) -> tuple[dict[str, Kernel], dict[str, tuple[int | str, ...]]]:
    """Each kernel's source (``function(name, buffers it uses, blocks)``), compiled, with its
    equations; and every buffer's shape."""
    names = sorted(buffers.shapes)
    kernels = {}
    for name, blocks in bodies.items():
        text = "\n".join(
            line for b in blocks for line in (b.lines if isinstance(b, Block) else [b])
        )
        used = [b for b in names if re.search(rf"\b{b}\b", text)]
        source = function(name, used, blocks)
        equations = [(b.label, b.expr) for b in blocks if isinstance(b, Block)]
        fn = compile_source(name, source)
        kernels[name] = Kernel(name, source, equations, fn, used, constants)
    return kernels, buffers.shapes
