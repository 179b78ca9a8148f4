"""Assemble a graph's kernels from each node's derived local equations (``graph_generic``).

Every node's equations are moved to the NumPy layout (samples are rows: the array ``x_h1``
holds X_h1ᵀ, shape (B, n_h1)) by SymPy's transpose and printed by ``codegen.KernelPrinter``,
as ``kernels`` does for the chain. The graph adds two sums, both read off the derivation:

* Λ_u = Σ_c (contribution of consumer c) [− ∂J/∂X_u for an output]: nodes are visited in
  reverse topological order, so every consumer of u has contributed when u is reached; the
  first contribution is assigned into ``lam_u``, each later one added to it.
* ∂L/∂θ = Σ over the uses of θ's parameter set: the same, into the buffer ``d_<θ>``; in
  ``sgd_step`` θ ← θ − η ∂L/∂θ is applied at the last use visited (the first in topological
  order), after every use has read θ.

An output layer read by no other node takes G_v = Dσ(Z_v)ᵀ Λ_v with Λ_v = −(1/B) ∂ℓ/∂x
substituted and simplified (the record's ``kernel_output_vjp``, (Y − X)/B for softmax with
cross-entropy); any other layer G_v = Dσ(Z_v)ᵀ Λ_v from its summed Λ_v. A ``zeros`` input
(the RNN's h_0) is the matrix 0 in the equations: its terms drop out when SymPy simplifies.
Kernels take ``params`` (a dict name → array), ``X`` and ``Y`` (tuples of the input and
target arrays, one per input and output node) and ``buf``; each block carries a comment
naming its equation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp
from sympy import MatrixSymbol, ZeroMatrix

from .codegen import Buffers, KernelPrinter, is_product
from .functions import Activation, Loss, get_activation, get_loss
from .graph import GraphSpec, NodeSpec
from .graph_generic import KINDS, NodeEquations, derive_node
from .kernels import (
    ETA,
    ROWS,
    Block,
    Kernel,
    body_lines,
    body_text,
    compile_bodies,
    decay_block,
    vjp_label,
)
from .matrices import BATCH, entrywise

KERNELS = ("forward", "adjoint", "loss_and_grad", "sgd_step", "loss")
MODES = ("adjoint", "grads", "update")


def var(param: str) -> str:
    """The Python name of a parameter: "h1.W" → W_h1, "out.W0" → W0_out, "h1.b" → b_h1.

    Every name a graph kernel makes from a user's name is a tag, "_", then that name, and
    no two kinds share a tag (nodes: x, z, g, lam, f, J, y; parameters: W, W0, …, b; their
    gradients: d; sums' scratch: acc; the printer's: sum, rows, max, zt, and t0, t1, … with
    no "_"): so no node or parameter set, whatever it is called, gets another's array."""
    group, _, kind = param.partition(".")
    return f"{kind}_{group}"


class GraphPrinter(KernelPrinter):
    """``KernelPrinter`` with two sums written without a copy: A + B of two arrays as one
    ``np.add``, and a sum of several products (Z_v = Σ_j X_j W_jᵀ + 1 bᵀ, Λ_u = Σ_c …) with
    the first product straight into ``out`` and each other one into a temporary, then added."""

    def _print_Add(self, e: sp.Add, out: str) -> None:
        me, terms = self.array(out), list(sp.Add.make_args(e))
        if me not in e.free_symbols and len(terms) >= 2 and all(t in self.arrays for t in terms):
            self.call("np.add", str(terms[0]), str(terms[1]), out=out)
            for t in terms[2:]:
                self.call("np.add", out, str(t), out=out)
            return
        super()._print_Add(e, out)

    def _print_MatAdd(self, e: sp.MatAdd, out: str) -> None:
        products = [a for a in e.args if is_product(a)]
        reads_out = any(self.names.get(m) == out for m in e.atoms(MatrixSymbol))
        if len(products) < 2 or reads_out:
            super()._print_MatAdd(e, out)
            return
        self._print(products[0], out=out)
        for p in products[1:]:
            coeff, rest = p.as_coeff_mmul()
            sign = "np.subtract" if coeff == -1 else "np.add"
            tmp = self.temp(self.shape(p))
            self._print(rest if coeff == -1 else p, out=tmp)
            self.call(sign, out, tmp, out=out)
        others = [a for a in e.args if a not in products]
        if others:
            rest_sum = sp.Add(*[self.to_scalar(a) for a in others])
            self._entrywise(out, self.array(out) + rest_sum)


@dataclass
class Binding:
    """One node's generic (column-layout) symbols → its own rows-layout symbolsᵀ (or 0)."""

    table: dict[sp.Basic, sp.Basic]

    def rows(self, e: sp.Basic) -> sp.MatrixExpr:
        """A column-layout expression in the rows layout (its transpose, in arrays)."""
        return sp.transpose(e.xreplace(self.table)).doit()


class GraphAssembler:
    """Builds a graph's blocks with one printer, one buffer registry and one name table.

    Every node has its own symbols in the rows layout, with concrete widths: X^v, Λ^v, G^v,
    Z^v (B, n_v), Y^v for an output, and the parameters W (n_v, n_u), b (1, n_v).
    """

    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec
        self.loss: Loss = get_loss(spec.loss)
        self.alpha = sp.Rational(spec.decay.numerator, spec.decay.denominator)
        self.buffers = Buffers()
        self.names: dict[sp.Basic, str] = {}
        self.printer = GraphPrinter(self.names, self.buffers, {})
        self.nodes = {n.name: n for n in spec.nodes}
        self.eqs: dict[str, NodeEquations] = {
            n.name: derive_node(n.op, len(n.inputs)) for n in spec.nodes if n.op in KINDS
        }
        self.bindings = {v: self._bind(self.nodes[v]) for v in self.eqs}
        for v in self.eqs:  # Z_v's array: known once the node's G and loss terms are
            self.names[self.sym("Z", v)] = self._z_buffer(self.nodes[v])

    # --- symbols, names and bindings -------------------------------------------------------
    def sym(self, kind: str, v: str) -> MatrixSymbol:
        """The node's matrix in the rows layout: X, Λ, G, Z or Y (B, n_v)."""
        return MatrixSymbol(f"{kind}^{v}", BATCH, self.nodes[v].width)

    def param(self, name: str) -> MatrixSymbol:
        shape = self.spec.param_shapes()[name]
        return MatrixSymbol(name, *shape) if len(shape) == 2 else MatrixSymbol(name, 1, shape[0])

    def act(self, node: NodeSpec) -> Activation:
        return get_activation(node.activation or "identity")

    def _bind(self, node: NodeSpec) -> Binding:
        eq, v = self.eqs[node.name], node.name
        table: dict[sp.Basic, sp.Basic] = {}
        for M, u in zip(eq.inputs, node.inputs):
            if self.nodes[u].op == "zeros":
                table[M] = ZeroMatrix(*M.shape)
                continue
            table[M] = self.sym("X", u).T
            self.names[self.sym("X", u)] = f"x_{u}"
            if self.nodes[u].op == "input":
                self.buffers.external[f"x_{u}"] = ("B", self.nodes[u].width)
        for M, kind, prefix in ((eq.X, "X", "x"), (eq.Lam, "Λ", "lam"), (eq.G, "G", "g")):
            table[M] = self.sym(kind, v).T
            self.names.setdefault(self.sym(kind, v), f"{prefix}_{v}")
        self.buffers.declare(f"x_{v}", ("B", node.width))
        if node.op == "layer":
            self.buffers.declare(f"g_{v}", ("B", node.width))
            for W, w_name in zip(eq.weights, node.weight_names):
                table[W] = self.param(w_name)
                self.names[self.param(w_name)] = var(w_name)
                self.buffers.external[var(w_name)] = self.spec.param_shapes()[w_name]
            assert eq.bias is not None
            table[eq.bias] = self.param(node.bias_name).T
            self.names[self.param(node.bias_name)] = var(node.bias_name)
            self.buffers.external[var(node.bias_name)] = (node.width,)
        if v in self.spec.outputs:
            self.names[self.sym("Y", v)] = f"y_{v}"
            self.buffers.external[f"y_{v}"] = ("B", node.width)
        return Binding(table)

    def _z_buffer(self, node: NodeSpec) -> str:
        """Z_v's array: its own where G_v or J reads Z_v, else X_v's (overwritten by σ)."""
        v = node.name
        if node.op != "layer":
            return f"x_{v}"
        needs = [self.vjp(node, fused) for fused in (False, True)]
        if v in self.spec.outputs:
            needs.append(self.terms(node))
        if any(e is not None and e.has(self.sym("Z", v)) for e in needs):
            return self.buffers.declare(f"z_{v}", ("B", node.width))
        return f"x_{v}"

    def block(self, label: str, out: str, expr: sp.Basic, scratch: tuple[str, ...] = ()) -> Block:
        lines = self.printer.assign(out, expr, scratch)
        return Block(label if lines else f"{label}: {out} already holds it", lines, expr)

    def zero(self, label: str, out: str, like: MatrixSymbol) -> Block:
        """out = 0 (the matrix calculus gave the zero matrix: a zeros node's term)."""
        start = len(self.printer.lines)
        self.printer.fill(out, self.printer.scalar(sp.S.Zero))
        return Block(label, self.printer.lines[start:], ZeroMatrix(*like.shape))

    def scratch(self, shape: tuple[int | str, ...]) -> str:
        """One temporary per shape, shared by every sum of that shape."""
        return self.buffers.declare("acc_" + "x".join(map(str, shape)), shape)

    # --- the node's pieces -----------------------------------------------------------------
    def fused(self, node: NodeSpec) -> bool:
        """An output layer no node reads: G_v with Λ_v = −(1/B) ∂ℓ/∂x substituted."""
        return (
            node.op == "layer"
            and node.name in self.spec.outputs
            and not self.spec.consumers(node.name)
        )

    def vjp(self, node: NodeSpec, fused: bool) -> sp.MatrixExpr | None:
        """G_v in the rows layout, as the activation record prints it."""
        if node.op != "layer":
            return None
        v, act = node.name, self.act(node)
        Z, X = self.sym("Z", v), self.sym("X", v)
        if fused:
            return act.kernel_output_vjp(self.loss, Z, X, self.sym("Y", v), ROWS)
        return act.kernel_vjp(Z, X, self.sym("Λ", v), ROWS)

    def terms(self, node: NodeSpec) -> sp.MatrixExpr:
        """The matrix of f(x_ij, y_ij) over an output, whose entries sum to B·J_v."""
        v = node.name
        Z = self.sym("Z", v) if node.op == "layer" else self.sym("X", v)
        return self.loss.kernel_terms(self.act(node), Z, self.sym("X", v), self.sym("Y", v), ROWS)

    def forward(self, node: NodeSpec) -> list[Block]:
        """Z_v and X_v = σ(Z_v) for a layer; X_v = Σ_j X_{u_j} for an add."""
        eq, b, v = self.eqs[node.name], self.bindings[node.name], node.name
        if node.op == "add":
            label = f"X^{v} = " + " + ".join(f"X^{u}" for u in node.inputs)
            return [self.block(label, f"x_{v}", b.rows(eq.forward))]
        assert eq.preactivation is not None
        act = self.act(node)
        live = [
            (u, w) for u, w in zip(node.inputs, node.weight_names) if self.nodes[u].op != "zeros"
        ]
        zeros = [u for u in node.inputs if self.nodes[u].op == "zeros"]
        dropped = f" ({', '.join(zeros)} = 0 drops out)" if zeros else ""
        sum_ = " + ".join([*(f"X^{u} {w}ᵀ" for u, w in live), f"1 {node.bias_name}ᵀ"])
        z = self.names[self.sym("Z", v)]
        first = self.block(f"Z^{v} = {sum_}{dropped}", z, b.rows(eq.preactivation))
        x = act.kernel_forward(self.sym("Z", v), ROWS)
        return [first, self.block(_forward_label(act, v), f"x_{v}", x)]

    def loss_terms(self, node: NodeSpec) -> Block:
        v = node.name
        self.buffers.declare(f"f_{v}", ("B", node.width))
        terms = self.terms(node)
        label = f"J_{v} = (1/B) Σ_ij f(X^{v}_ij, Y^{v}_ij), f = {body_text(terms)}"
        lines, total = self.printer.total(f"f_{v}", terms)
        return Block(label, [*lines, f"J_{v} = {total}"], terms)

    # --- the backward pass -----------------------------------------------------------------
    def multiplier(self, node: NodeSpec, mode: str) -> list[Block | str]:
        """Λ_v = Σ_c (consumer c's contribution) [+ −(1/B) ∂ℓ/∂x for an output], one block
        when v is reached (every consumer visited); a single plain term is bound, not copied."""
        v = node.name
        if self.fused(node) and mode != "adjoint":
            return []  # G_v takes Λ_v substituted
        parts: list[tuple[str, sp.MatrixExpr]] = []
        if v in self.spec.outputs:
            body = entrywise(self.loss.kernel_adjoint_body(), self.sym("X", v), self.sym("Y", v))
            parts.append((f"−(1/B) ∂ℓ/∂x(X^{v}, Y^{v}) = {body_text(body)}", body))
        for c in self.spec.consumers(v):
            cn, eq = self.nodes[c], self.eqs[c]
            for j, u in enumerate(cn.inputs):
                if u == v:
                    text = f"G^{c} {cn.weight_names[j]}" if cn.op == "layer" else f"Λ^{c}"
                    parts.append((f"{text} (from {c})", self.bindings[c].rows(eq.to_input[j])))
        label = f"Λ^{v} = " + " + ".join(text for text, _ in parts)
        expr = sp.MatAdd(*[e for _, e in parts]).doit() if len(parts) > 1 else parts[0][1]
        if isinstance(expr, MatrixSymbol) and expr in self.names:  # Λ_v = Λ_c: the same array
            return [Block(f"{label}: the same array", [f"lam_{v} = {self.names[expr]}"], expr)]
        self.buffers.declare(f"lam_{v}", ("B", node.width))
        return [self.block(label, f"lam_{v}", expr, (self.scratch(("B", node.width)),))]

    def node_backward(self, node: NodeSpec, mode: str, state: Progress) -> list[Block | str]:
        """Node v's backward blocks (reverse topological order): Λ_v, then the updates this
        Λ_v was the last reader of W for, G_v, and its parameters' gradient contributions
        (updates wait until every Λ that reads their W is assembled)."""
        out = self.multiplier(node, mode)
        state.done.add(node.name)
        out += state.ready()
        if node.op == "layer":
            G = self.vjp(node, self.fused(node))
            out.append(self.block(self._vjp_label(node), f"g_{node.name}", G))
            if mode != "adjoint":
                out += self.param_blocks(node, mode, state)
                out += state.ready()
        return out

    def _vjp_label(self, node: NodeSpec) -> str:
        v = node.name
        if self.fused(node):
            G = self.vjp(node, True)
            return (
                f"G^{v} = Dσ(Z^{v})ᵀ Λ^{v} with Λ^{v} substituted: entrywise {body_text(G)}, "
                f"x from X^{v}, y from Y^{v}"
            )
        return vjp_label(self.act(node), v, "σ'")

    def param_blocks(self, node: NodeSpec, mode: str, state: Progress) -> list[Block | str]:
        """∂L/∂W_j (+)= −G_vᵀ X_{u_j}, ∂L/∂b (+)= −1ᵀ G_v, and with ``update``
        θ ← θ − η ∂L/∂θ once this is the last use visited."""
        v, eq, b = node.name, self.eqs[node.name], self.bindings[node.name]
        items: list[tuple[str, sp.MatrixExpr, str]] = []
        for j, (w, u) in enumerate(zip(node.weight_names, node.inputs)):
            dW = sp.transpose(b.rows(eq.weight_gradients[j])).doit()  # W keeps (n_v, n_u)
            items.append((w, dW, f"−G^{v}ᵀ X^{u}"))
        assert eq.bias_gradient is not None
        items.append((node.bias_name, b.rows(eq.bias_gradient), f"−1ᵀ G^{v}"))
        out: list[Block | str] = []
        for name, d, text in items:
            out += self._param(v, name, d, text, mode, state)
        return out

    def _param(
        self, v: str, name: str, d: sp.MatrixExpr, text: str, mode: str, state: Progress
    ) -> list[Block | str]:
        """Use v's contribution d to ∂L/∂θ (none where d is 0: a zeros input): the first
        assigned into the buffer, later ones added; at the last use visited θ ← θ − η ∂L/∂θ
        (``update``), or ∂L/∂θ = 0 where no use contributed."""
        uses = self.spec.uses(name.split(".")[0])
        theta = self.param(name)
        buf = self.buffers.declare(f"d_{var(name)}", self.buffers.external[var(name)])
        D = MatrixSymbol(f"∂L/∂{name}", *theta.shape)
        self.names[D] = buf
        last, zero, single = uses[0] == v, isinstance(d, ZeroMatrix), len(uses) == 1
        readers = self._readers(name)
        use = f" (use {v})" if not single else ""
        if last and self.alpha and name.split(".")[1].startswith("W"):  # + α θ, once
            decay = f"α {name}, α = {self.spec.weight_decay!r} (weight decay)"
            if zero:  # no use contributes: the decay alone, no use's term
                d, text, use, zero = self.alpha * theta, decay, "", False
            else:
                d, text = d + self.alpha * theta, f"{text} + {decay}"
        if mode == "update" and single and not zero:  # fused, as in the chain's kernels
            label = f"{name} ← {name} − η ∂L/∂{name}, ∂L/∂{name} = {text}"
            state.wait(
                readers, lambda: self.block(label, var(name), (theta - ETA * d).doit(), (buf,))
            )
            return []
        out: list[Block | str] = []
        if not zero:
            if buf in state.begun:
                shape = self.printer.shape(d)
                label = f"∂L/∂{name} += {text}{use}"
                out.append(self.block(label, buf, (D + d).doit(), (self.scratch(shape),)))
            else:
                state.begun.add(buf)
                out.append(self.block(f"∂L/∂{name} = {text}{use}", buf, d))
        if last and buf not in state.begun and mode == "grads":
            out.append(self.zero(f"∂L/∂{name} = 0: every use reads a zeros node", buf, D))
        if last and buf in state.begun and mode == "update":
            label = f"{name} ← {name} − η ∂L/∂{name} (summed over its {len(uses)} uses)"
            state.wait(
                readers, lambda: self.block(label, var(name), (theta - ETA * D).doit(), (buf,))
            )
        return out

    def decay_block(self) -> Block:
        """J += (α/2) Σ ‖W‖² over every weight matrix, each shared set once (defined, not
        derived; biases are not decayed)."""
        shapes = {w: s for w, s in self.spec.param_shapes().items() if len(s) == 2}
        W = {var(w): MatrixSymbol(w, *s) for w, s in shapes.items()}
        return decay_block(self.printer, self.alpha, self.spec.weight_decay, W, "Σ ‖W‖²")

    def _readers(self, name: str) -> set[str]:
        """The nodes whose Λ reads the weight ``name`` (W_j of a use: Λ_{u_j} = … + G W_j)."""
        if not name.split(".")[1].startswith("W"):
            return set()
        group, out = name.split(".")[0], set()
        for v in self.spec.uses(group):
            node = self.nodes[v]
            for w, u in zip(node.weight_names, node.inputs):
                if w == name and self.nodes[u].op in KINDS:
                    out.add(u)
        return out

    def backward(self, mode: str) -> list[Block | str]:
        state = Progress()
        out: list[Block | str] = []
        for node in reversed(self.spec.nodes):
            if node.op in KINDS:
                out += self.node_backward(node, mode, state)
        assert not state.pending, "an update waits for a multiplier never assembled"
        return out


@dataclass
class Progress:
    """The backward pass so far: multipliers assembled, gradient buffers begun, and updates
    waiting for the multipliers that read their W (θ is read until then)."""

    done: set[str] = field(default_factory=set)
    begun: set[str] = field(default_factory=set)
    pending: list[tuple[set[str], Callable[[], Block]]] = field(default_factory=list)

    def wait(self, readers: set[str], make: Callable[[], Block]) -> None:
        self.pending.append((readers, make))

    def ready(self) -> list[Block | str]:
        """The waiting updates whose readers are all assembled, printed now, in order."""
        now = [make for readers, make in self.pending if readers <= self.done]
        self.pending = [(r, m) for r, m in self.pending if not r <= self.done]
        return [make() for make in now]


def _forward_label(act: Activation, v: str) -> str:
    if not act.elementwise:
        return f"X^{v} = {act.text}(Z^{v}) by samples (rows), after subtracting each row's max"
    if act.builtin:
        return f"X^{v} = {act.text}(Z^{v})"
    return f"X^{v} = σ(Z^{v}), σ(z) = {act.text}"


SIGNATURES = {
    "forward": ("params, X, buf", "[X^o for each output o] (B, n_o): the forward pass"),
    "adjoint": ("params, X, Y, buf", "{v: Λ^v}: the multipliers at the KKT point"),
    "loss_and_grad": ("params, X, Y, buf", "J and {θ: ∂L/∂θ} for every parameter"),
    "sgd_step": ("params, X, Y, eta, buf", "J before the step; θ ← θ − η ∂L/∂θ in place"),
    "loss": ("params, X, Y, buf", "J = (1/B) Σ_o Σ ℓ(y_o, x_o): forward pass and loss"),
}


def _header(name: str, spec: GraphSpec, buffers: list[str], blocks: list[Block | str]) -> list[str]:
    args, returns = SIGNATURES[name]
    xs = [f"x_{u}" for u in spec.input_names]
    ys = [f"y_{o}" for o in spec.outputs]
    doc = [
        f'    """{name}({args}) -> {returns}.',
        "",
        f"    Generated by lagrange_bp for {spec.describe()} from the derived node equations.",
        "    Arrays hold samples as rows: x_v (B, n_v) is X_vᵀ; X and Y are tuples of the input",
        "    and target arrays; params maps names to W (n_v, n_u) and b (n_v,).",
        "    Equations, in order:",
        *[f"      {b.label}" for b in blocks if isinstance(b, Block)],
        '    """',
    ]
    lines = [f"def {name}({args}):", *doc]
    lines += [f'    {var(p)} = params["{p}"]' for p in spec.param_shapes()]
    lines.append(f"    {', '.join(xs)}, = X")
    if "Y" in args:
        lines.append(f"    {', '.join(ys)}, = Y")
    lines.append(f"    B = {xs[0]}.shape[0]")
    if buffers:
        lines.append(f"    {', '.join(buffers)}, = buf")
    return lines


def _function(name: str, spec: GraphSpec, buffers: list[str], blocks: list[Block | str]) -> str:
    return "\n".join(_header(name, spec, buffers, blocks) + body_lines(blocks)) + "\n"


def build_graph_kernels(
    spec: GraphSpec,
) -> tuple[dict[str, Kernel], dict[str, tuple[int | str, ...]]]:
    """Generate and compile forward, adjoint, loss_and_grad, sgd_step and loss for a graph."""
    asm = GraphAssembler(spec)
    forward = [b for n in spec.nodes if n.op in KINDS for b in asm.forward(n)]
    loss: list[Block | str] = [asm.loss_terms(spec.node(o)) for o in spec.outputs]
    loss.append(f"loss = ({' + '.join(f'J_{o}' for o in spec.outputs)}) / B")
    if spec.weight_decay:
        loss.append(asm.decay_block())
    lams = "{" + ", ".join(f'"{v}": lam_{v}' for v in asm.eqs) + "}"
    grads = "{" + ", ".join(f'"{p}": d_{var(p)}' for p in spec.param_shapes()) + "}"
    outs = "[" + ", ".join(f"x_{o}" for o in spec.outputs) + "]"
    bodies: dict[str, list[Block | str]] = {
        "forward": [*forward, f"return {outs}"],
        "adjoint": [*forward, *asm.backward("adjoint"), f"return {lams}"],
        "loss_and_grad": [*forward, *loss, *asm.backward("grads"), f"return loss, {grads}"],
        "sgd_step": [*forward, *loss, *asm.backward("update"), "return loss"],
        "loss": [*forward, *loss, "return loss"],
    }
    return compile_bodies(
        bodies, asm.buffers, asm.printer.constants, lambda n, used, b: _function(n, spec, used, b)
    )
