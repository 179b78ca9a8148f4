"""Networks beyond the chain: skip connections, shared weights and recurrence, as a graph.

A ``Graph`` is built node by node; every node reads only nodes that exist already, so the
order of construction is a topological order and a cycle cannot be written (a recurrence is
unrolled over its steps, ``recurrent``). Node kinds, with x_v the state of node v:

  input   x_v = the data (one slice of the sample's row X)
  zeros   x_v = 0 (a constant, e.g. the RNN's h_0)
  layer   x_v = σ(Σ_j W_j x_{u_j} + b)    W_j (n_v, n_{u_j}), b (n_v,), parameters "name.W_j"
  add     x_v = Σ_j x_{u_j}               (equal widths, no parameters)

A layer made with ``share=True`` reuses the parameters of the earlier layer of that name: one
set of parameters, several uses. ``Graph.output`` ends the graph with its per-sample loss
ℓ = Σ_o ℓ(y_o, x_o) over the output nodes (Y is their targets, concatenated) and returns the
immutable ``GraphSpec`` that ``derive`` and ``verify`` take.

The JSON format of a graph file is ``graph_json``'s (``GraphSpec.to_json``,
``graph_from_json``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .functions import ACTIVATIONS, get_activation, get_loss
from .spec import (
    MAX_EXACT_WEIGHTS,
    NetworkSpec,
    check_derivation_memory,
    checked_loss,
    checked_weight_decay,
    exact_decay,
    shown_name,
)

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
RESERVED = frozenset({"y"})  # the target's symbols are y[i]
KINDS = ("input", "zeros", "layer", "add")


@dataclass(frozen=True)
class NodeSpec:
    """One node: its name, kind (``op``), width n_v, the nodes it reads, and for a layer its
    activation (canonical key) and parameter set ``params``."""

    name: str
    op: str
    width: int
    inputs: tuple[str, ...] = ()
    activation: str | None = None
    params: str | None = None

    @property
    def weight_names(self) -> tuple[str, ...]:
        """ "p.W" for a layer of one input, "p.W0", "p.W1", ... for several (p = ``params``)."""
        if len(self.inputs) == 1:
            return (f"{self.params}.W",)
        return tuple(f"{self.params}.W{j}" for j in range(len(self.inputs)))

    @property
    def bias_name(self) -> str:
        return f"{self.params}.b"


class Node:
    """A handle on a node of a ``Graph`` under construction: pass it to later nodes."""

    __slots__ = ("graph", "name", "width")

    def __init__(self, graph: Graph, name: str, width: int) -> None:
        self.graph, self.name, self.width = graph, name, width

    def __repr__(self) -> str:
        return f"<Node {self.name!r} ({self.width})>"


class Graph:
    """A network as a directed acyclic graph, built node by node (see the module docstring).

    ``inputs``: one width, or several (input nodes x0, x1, ...; X is their concatenation);
    ``names`` optionally names the input nodes.
    """

    def __init__(self, inputs: int | Sequence[int], *, names: Sequence[str] | None = None) -> None:
        widths = (inputs,) if isinstance(inputs, int) else inputs
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
            raise TypeError(f"inputs must be a width or a non-empty sequence, got {inputs!r}")
        labels = [f"x{i}" for i in range(len(widths))] if names is None else list(names)
        if len(labels) != len(widths):
            raise ValueError(f"names: expected {len(widths)} input names, got {len(labels)}")
        self._nodes: list[NodeSpec] = []
        self._groups: dict[str, NodeSpec] = {}  # parameter set → its first layer
        handles = []
        for i, (label, w) in enumerate(zip(labels, widths)):
            node = NodeSpec(self._new_name(label), "input", _width(w, f"input {i}"))
            handles.append(self._push(node))
        self.inputs: tuple[Node, ...] = tuple(handles)

    def layer(
        self,
        inputs: Node | Sequence[Node],
        width: int,
        activation: str = "sigmoid",
        *,
        name: str | None = None,
        share: bool = False,
        node: str | None = None,
    ) -> Node:
        """x_v = σ(Σ_j W_j x_{u_j} + b), W_j (width, n_{u_j}), b (width,).

        ``name`` names the parameter set (default ``layer<k>``); ``share=True`` reuses that of
        the earlier layer ``name`` (same input widths, width and activation); ``node`` names
        the node (default: ``name``, or ``name_<use>`` for a shared use).
        """
        sources = self._sources(inputs, f"layer {name or ''}".strip())
        group = name if name is not None else f"layer{self._count('layer') + 1}"
        group = _name(group, "layer name")
        act = _activation(activation, group)
        n = _width(width, f"layer {group!r} width")
        if share:
            return self._shared(group, sources, n, act, node)
        if group in self._groups or self._taken(group):
            raise ValueError(
                f"layer name {group!r} is already used; pass share=True to reuse its parameters"
                f", or choose another name"
            )
        label = self._new_name(node if node is not None else group)
        spec = NodeSpec(label, "layer", n, tuple(s.name for s in sources), act, group)
        self._groups[group] = spec
        return self._push(spec)

    def add(self, *nodes: Node, name: str | None = None) -> Node:
        """x_v = Σ_j x_{u_j}: two or more nodes of one width, no parameters."""
        flat: list[Any] = (
            list(nodes[0]) if len(nodes) == 1 and isinstance(nodes[0], Sequence) else list(nodes)
        )
        label = self._new_name(name if name is not None else f"add{self._count('add') + 1}")
        sources = self._sources(flat, f"add {label!r}")
        if len(sources) < 2:
            raise ValueError(f"add {label!r} needs at least two nodes, got {len(sources)}")
        widths = {s.name: s.width for s in sources}
        if len(set(widths.values())) != 1:
            raise ValueError(f"add {label!r}: nodes of different widths {widths}; add needs one")
        return self._push(NodeSpec(label, "add", sources[0].width, tuple(s.name for s in sources)))

    def zeros(self, width: int, name: str | None = None) -> Node:
        """x_v = 0, a constant of the given width (no multiplier, no parameters)."""
        label = self._new_name(name if name is not None else f"zeros{self._count('zeros') + 1}")
        return self._push(NodeSpec(label, "zeros", _width(width, f"zeros {label!r} width")))

    def output(
        self, nodes: Node | Sequence[Node], loss: str = "mse", *, weight_decay: float = 0.0
    ) -> GraphSpec:
        """End the graph: ℓ = Σ_o ℓ(y_o, x_o) over the output nodes; the immutable spec.

        ``weight_decay`` is α ≥ 0 of the objective's (α/2) Σ ‖W‖² over every weight matrix
        (each shared set once; biases are not decayed).
        """
        outs, key = self._check_output(nodes, loss)
        return GraphSpec(tuple(self._nodes), outs, key, checked_weight_decay(weight_decay))

    # --- checks ---------------------------------------------------------------------------

    def _check_output(self, nodes: Node | Sequence[Node], loss: str) -> tuple[tuple[str, ...], str]:
        listed = [nodes] if isinstance(nodes, Node) else nodes
        outs = self._sources(listed, "output")
        names = [o.name for o in outs]
        if len(set(names)) != len(names):
            raise ValueError(f"output: a node is listed twice in {names}")
        by_name = {n.name: n for n in self._nodes}
        for o in names:
            if by_name[o].op not in ("layer", "add"):
                raise ValueError(
                    f"output {o!r} is an {by_name[o].op} node; outputs are layers or adds"
                )
        self._check_reach(names)
        return tuple(names), _graph_loss(
            loss, [(o, by_name[o].activation or "identity") for o in names]
        )

    def _check_reach(self, outputs: list[str]) -> None:
        needed = set(outputs)
        for n in reversed(self._nodes):
            if n.name in needed:
                needed |= set(n.inputs)
        for n in self._nodes:
            if n.name not in needed:
                what = "input" if n.op == "input" else f"{n.op} node"
                raise ValueError(
                    f"{what} {n.name!r} is unused: it reaches none of the outputs {outputs}; "
                    f"every node must feed an output"
                )

    def _shared(self, group: str, sources: list[Node], n: int, act: str, node: str | None) -> Node:
        first = self._groups.get(group)
        if first is None:
            raise ValueError(f"share=True: there is no earlier layer named {group!r} to share")
        widths = tuple(s.width for s in sources)
        expected = tuple(self._width_of(u) for u in first.inputs)
        if widths != expected or n != first.width:
            raise ValueError(
                f"shared layer {group!r}: inputs of widths {widths} to width {n}, but its "
                f"parameters take inputs of widths {expected} to width {first.width}"
            )
        if act != first.activation:
            raise ValueError(
                f"shared layer {group!r}: activation {act!r}, but it was made with "
                f"{first.activation!r}; a shared layer keeps its activation"
            )
        uses = sum(1 for v in self._nodes if v.params == group)
        label = self._new_name(node if node is not None else f"{group}_{uses + 1}")
        return self._push(NodeSpec(label, "layer", n, tuple(s.name for s in sources), act, group))

    def _sources(self, nodes: object, where: str) -> list[Node]:
        listed = [nodes] if isinstance(nodes, Node) else nodes
        if isinstance(listed, (str, bytes)) or not isinstance(listed, Sequence) or not listed:
            raise TypeError(f"{where}: expected a node or a non-empty list of nodes, got {nodes!r}")
        for s in listed:
            if not isinstance(s, Node):
                raise TypeError(f"{where}: expected nodes of this graph, got {s!r}")
            if s.graph is not self:
                raise ValueError(f"{where}: node {s.name!r} belongs to another Graph")
        return list(listed)

    def _new_name(self, label: object) -> str:
        name = _name(label, "node name")
        if self._taken(name) or name in self._groups:
            raise ValueError(f"node name {name!r} is already used; node names are unique")
        return name

    def _taken(self, name: str) -> bool:
        return any(n.name == name for n in self._nodes)

    def _count(self, op: str) -> int:
        return sum(1 for n in self._nodes if n.op == op)

    def _width_of(self, name: str) -> int:
        return next(n.width for n in self._nodes if n.name == name)

    def _push(self, spec: NodeSpec) -> Node:
        self._nodes.append(spec)
        return Node(self, spec.name, spec.width)


def _name(label: object, what: str) -> str:
    if not isinstance(label, str):
        raise TypeError(f"{what} must be a string, got {type(label).__name__}")
    if not NAME.fullmatch(label) or label in RESERVED:
        raise ValueError(
            f"{what} {shown_name(label)} is not accepted: a letter, then letters, digits or _ "
            f"(at most 40), and not {', '.join(sorted(RESERVED))}"
        )
    return label


def _width(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be a positive integer, got {n!r}")
    if n <= 0:
        raise ValueError(f"{what} must be a positive integer, got {n}")
    return n


def _activation(name: object, group: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"activation of layer {group!r} must be a string, got {name!r}")
    try:
        return get_activation(name).key
    except ValueError as exc:
        if name.strip().isidentifier():
            raise ValueError(
                f"unknown activation {shown_name(name)} for layer {group!r}; known: "
                f"{', '.join(ACTIVATIONS)}, or an expression in z such as 'z*tanh(softplus(z))'"
            ) from None
        raise ValueError(f"layer {group!r}: {exc}") from None


def _graph_loss(loss: object, outputs: list[tuple[str, str]]) -> str:
    """The loss's key, checked against each output node's activation (as ``NetworkSpec``)."""
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a string, got {type(loss).__name__}")
    try:
        needed = get_loss(loss).requires_output
    except ValueError:
        needed = None  # checked_loss says what is wrong with it
    key = loss
    for node, act in outputs:
        if needed is not None and act != needed:
            raise ValueError(
                f"loss {loss!r} needs a {needed} output layer, but output {node!r} is "
                f"{get_activation(act).text!r}; give every output node activation {needed!r}"
            )
        key = checked_loss(loss, (act,))
    return key


@dataclass(frozen=True)
class GraphSpec:
    """An immutable, validated graph: ``nodes`` in topological order, ``outputs``, ``loss``.

    Built by ``Graph.output``, ``recurrent`` or ``graph_from_json``; constructing one directly
    replays it through ``Graph``, so the same checks apply.
    """

    nodes: tuple[NodeSpec, ...]
    outputs: tuple[str, ...]
    loss: str
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, tuple) or not all(
            isinstance(n, NodeSpec) for n in self.nodes
        ):
            raise TypeError("GraphSpec.nodes must be a tuple of NodeSpec")
        if not isinstance(self.outputs, tuple):
            raise TypeError("GraphSpec.outputs must be a tuple of node names")
        graph, outs, key = _replay(self.nodes, self.outputs, self.loss)
        object.__setattr__(self, "nodes", tuple(graph._nodes))
        object.__setattr__(self, "outputs", outs)
        object.__setattr__(self, "loss", key)
        object.__setattr__(self, "weight_decay", checked_weight_decay(self.weight_decay))

    def node(self, name: str) -> NodeSpec:
        """The node called ``name`` (``KeyError`` if none)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def order(self) -> tuple[str, ...]:
        """Node names in topological order (the order of construction)."""
        return tuple(n.name for n in self.nodes)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if n.op == "input")

    @property
    def input_widths(self) -> tuple[int, ...]:
        return tuple(n.width for n in self.nodes if n.op == "input")

    @property
    def output_widths(self) -> tuple[int, ...]:
        return tuple(self.node(o).width for o in self.outputs)

    def consumers(self, name: str) -> tuple[str, ...]:
        """The nodes that read node ``name``, in topological order."""
        return tuple(n.name for n in self.nodes if name in n.inputs)

    def uses(self, params: str) -> tuple[str, ...]:
        """The layer nodes that use parameter set ``params``, in topological order."""
        return tuple(n.name for n in self.nodes if n.params == params)

    @property
    def groups(self) -> dict[str, NodeSpec]:
        """Parameter set → its first layer node, in order of creation."""
        out: dict[str, NodeSpec] = {}
        for n in self.nodes:
            if n.params is not None and n.params not in out:
                out[n.params] = n
        return out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter name → shape: W_j (n_v, n_{u_j}), b (n_v,), per parameter set."""
        shapes: dict[str, tuple[int, ...]] = {}
        for first in self.groups.values():
            for w, u in zip(first.weight_names, first.inputs):
                shapes[w] = (first.width, self.node(u).width)
            shapes[first.bias_name] = (first.width,)
        return shapes

    @property
    def n_weights(self) -> int:
        """Weight entries, each shared parameter counted once."""
        return sum(a * b for a, b in (s for s in self.param_shapes().values() if len(s) == 2))

    @property
    def n_params(self) -> int:
        """Weight and bias entries, each shared parameter counted once."""
        total = 0
        for shape in self.param_shapes().values():
            total += shape[0] * (shape[1] if len(shape) == 2 else 1)
        return total

    @property
    def decay(self) -> Fraction:
        """α as the exact rational its decimal form reads (0.01 is 1/100), for exact proofs."""
        return exact_decay(self.weight_decay)

    def describe(self) -> str:
        """One line: ``graph 4 → 3: h1 tanh 8, h2 tanh 8, out softmax 3; 1 add; cross_entropy``."""
        parts = []
        for group, first in self.groups.items():
            uses = len(self.uses(group))
            shared = f" ×{uses} shared" if uses > 1 else ""
            parts.append(
                f"{group} {get_activation(first.activation or '').text} {first.width}{shared}"
            )
        adds = sum(1 for n in self.nodes if n.op == "add")
        extra = f"; {adds} add{'s' if adds != 1 else ''}" if adds else ""
        ins, outs = _widths(self.input_widths), _widths(self.output_widths)
        decay = f", weight decay {self.weight_decay!r}" if self.weight_decay else ""
        loss = get_loss(self.loss).text
        return f"graph {ins} → {outs}: {', '.join(parts)}{extra}; {loss}{decay}"

    def check_exact_size(self, max_weights: int | None = MAX_EXACT_WEIGHTS) -> None:
        """Raise ``ValueError`` when an exact derivation would be too large (``None``: no limit)."""
        check_derivation_memory(self.describe(), self.n_weights)
        if max_weights is not None and self.n_weights > max_weights:
            raise ValueError(
                f"{self.describe()} has {self.n_weights} weights, above the exact-derivation "
                f"limit of {max_weights} (one SymPy symbol per entry); prove the node kinds for "
                f"every width with verify --general and the compiled code with "
                f"lbp.verify(lbp.compile(spec)), or raise the limit with max_weights=... "
                f"(CLI: --max-weights N, 0 for none)"
            )

    def to_json(self) -> str:
        """The graph in the JSON format of ``graph_json``."""
        from .graph_json import to_json

        return to_json(self)


def _widths(ws: tuple[int, ...]) -> str:
    """4, 3+2, or 5×2 for five nodes of width 2."""
    if len(ws) > 2 and len(set(ws)) == 1:
        return f"{len(ws)}×{ws[0]}"
    return "+".join(map(str, ws))


def _replay(
    nodes: tuple[NodeSpec, ...], outputs: tuple[str, ...], loss: str
) -> tuple[Graph, tuple[str, ...], str]:
    """Rebuild the nodes through ``Graph`` (every check again); the graph, outputs and loss."""
    inputs = [n for n in nodes if n.op == "input"]
    if not inputs or any(n.op != "input" for n in nodes[: len(inputs)]):
        raise ValueError("a graph starts with its input nodes, and has at least one")
    g = Graph(tuple(n.width for n in inputs), names=[n.name for n in inputs])
    handles = {h.name: h for h in g.inputs}

    def read(n: NodeSpec) -> list[Node]:
        missing = [u for u in n.inputs if u not in handles]
        if missing:
            raise ValueError(
                f"node {n.name!r} reads {missing[0]!r}, which is not an earlier node "
                f"(nodes read only earlier nodes: a graph has no cycles)"
            )
        return [handles[u] for u in n.inputs]

    for n in nodes[len(inputs) :]:
        if n.op == "layer":
            shared = n.params in g._groups
            h = g.layer(
                read(n), n.width, n.activation or "", name=n.params, share=shared, node=n.name
            )
        elif n.op == "add":
            h = g.add(*read(n), name=n.name)
        elif n.op == "zeros":
            h = g.zeros(n.width, name=n.name)
        else:
            raise ValueError(f"node {n.name!r}: unknown op {n.op!r}; known: {', '.join(KINDS)}")
        handles[h.name] = h
    if not all(isinstance(o, str) and o in handles for o in outputs):
        raise ValueError(f"outputs {list(outputs)!r} must name nodes of the graph")
    outs, key = g._check_output([handles[o] for o in outputs], loss)
    return g, outs, key


def chain_graph(spec: NetworkSpec) -> GraphSpec:
    """An MLP as the graph x0 → layer1 → … → layerN (params "layer<k>.W", "layer<k>.b"): the
    chain that ``kkt.derive`` solves with the one engine that solves every graph."""
    if not isinstance(spec, NetworkSpec):
        raise TypeError(f"spec must be a lagrange_bp.NetworkSpec, got {type(spec).__name__}")
    g = Graph(inputs=spec.widths[0])
    node = g.inputs[0]
    for k, (n, act) in enumerate(zip(spec.widths[1:], spec.activations), start=1):
        node = g.layer(node, n, act, name=f"layer{k}")
    return g.output(node, loss=spec.loss, weight_decay=spec.weight_decay)


def recurrent(
    inputs: int,
    hidden: int,
    outputs: int,
    steps: int,
    activation: str = "tanh",
    output_activation: str = "identity",
    loss: str = "mse",
    outputs_at: str = "last",
    weight_decay: float = 0.0,
) -> GraphSpec:
    """The Elman network unrolled over ``steps``: h_t = σ(W_x x_t + W_h h_{t-1} + b), h_0 = 0.

    Parameters "cell.W0" = W_x (hidden, inputs), "cell.W1" = W_h (hidden, hidden), "cell.b",
    one set shared by every step; the output o = σ_o(W h + b) ("out.W", "out.b") at the last
    step, or at every step (``outputs_at="every"``, shared, ℓ summed over steps). X is
    (B, steps·inputs) and Y (B, outputs) or (B, steps·outputs), time-major within a row.
    Node names: x1..xT, h0 (the zeros), h1..hT, o_t. ``weight_decay``: as ``Graph.output``.
    """
    if outputs_at not in ("last", "every"):
        raise ValueError(f"outputs_at must be 'last' or 'every', got {outputs_at!r}")
    t_max = _width(steps, "steps")
    g = Graph((inputs,) * t_max, names=[f"x{t}" for t in range(1, t_max + 1)])
    h = g.zeros(hidden, name="h0")
    outs: list[Node] = []
    for t in range(1, t_max + 1):
        h = g.layer(
            [g.inputs[t - 1], h], hidden, activation, name="cell", share=t > 1, node=f"h{t}"
        )
        if outputs_at == "every" or t == t_max:
            o = g.layer(h, outputs, output_activation, name="out", share=bool(outs), node=f"o{t}")
            outs.append(o)
    return g.output(outs, loss=loss, weight_decay=weight_decay)
