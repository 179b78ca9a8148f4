"""Graph options shared by the commands: ``--graph FILE`` and ``--recurrent``.

``--graph FILE`` reads a graph saved as JSON (``GraphSpec.to_json``; the format of ``graph_json``'s
docstring), size-limited and validated by ``graph_from_json``. ``--recurrent`` builds the Elman
network ``recurrent(inputs, hidden, outputs, steps, activation, output_activation, loss,
outputs_at)`` from ``--hidden N --steps T --outputs-at last|every``, ``--activations
CELL[,OUTPUT]`` and ``--loss``; ``--inputs`` and ``--outputs`` (per step) where the command
has no data to take them from (``derive``, ``verify``), else from the data (``train``:
``step_sizes``, its own defaults). Every function here raises ``ValueError`` naming the option
at fault; the commands report it as bad input (one line, exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from .functions import get_loss
from .graph import GraphSpec, recurrent
from .graph_json import MAX_JSON_CHARS, graph_from_json
from .safe_io import shown

MAX_GRAPH_BYTES = 4 * MAX_JSON_CHARS  # UTF-8 takes at most 4 bytes a character
RECURRENT_DEFAULTS = {"inputs": 1, "hidden": 2, "outputs": 1, "steps": 3}
RECURRENT_ONLY = ("hidden", "steps", "outputs_at", "inputs", "outputs")


def add_graph_args(
    p: argparse.ArgumentParser,
    *,
    sizes: bool = True,
    defaults: Mapping[str, int] = RECURRENT_DEFAULTS,
) -> None:
    """``--graph``, ``--recurrent`` and its sizes (``sizes=False``: from the data; ``defaults``)."""
    from_data = (
        ""
        if sizes
        else "; inputs and outputs per step from the data, a row being T steps "
        "× inputs, time-major (the sequence datasets are generated with T steps)"
    )
    g = p.add_argument_group("graphs: skip connections, shared weights, recurrence")
    g.add_argument(
        "--graph",
        metavar="FILE",
        default=None,
        help="a graph saved as JSON (GraphSpec.to_json(); at most 1,000,000 characters) "
        "instead of --widths",
    )
    g.add_argument(
        "--recurrent",
        action="store_true",
        help="the Elman network h_t = σ(W_x x_t + W_h h_(t-1) + b), h_0 = 0, unrolled over "
        "--steps with one shared cell, output o = σ_o(V h + c); --activations CELL[,OUTPUT] "
        "(default tanh, and identity, or softmax for cross_entropy)" + from_data,
    )
    g.add_argument(
        "--hidden",
        type=int,
        default=None,
        metavar="N",
        help=f"with --recurrent: width of h_t (default {defaults['hidden']})",
    )
    g.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="T",
        help=f"with --recurrent: the number of steps T (default {defaults['steps']})",
    )
    g.add_argument(
        "--outputs-at",
        choices=("last", "every"),
        default=None,
        help="with --recurrent: an output at the last step (default) or at every step "
        "(shared, ℓ summed over the steps)",
    )
    if sizes:
        g.add_argument(
            "--inputs",
            type=int,
            default=None,
            metavar="N",
            help="with --recurrent: width of each step's input x_t (default 1)",
        )
        g.add_argument(
            "--outputs",
            type=int,
            default=None,
            metavar="N",
            help="with --recurrent: width of each output o_t (default 1)",
        )


def _given(args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name, None) is not None


def recurrent_activations(activations: object, loss: str) -> tuple[str, str]:
    """(cell σ, output σ_o) from ``--activations CELL[,OUTPUT]`` (a list or a comma-separated
    string); the output's default is softmax for a loss that needs it, else identity."""
    if activations is None:
        names: list[str] = []
    elif isinstance(activations, str):
        from .cli_train import split_names  # here: cli_train may import this module

        names = split_names(activations)
    elif isinstance(activations, (list, tuple)):
        names = [str(a) for a in activations]
    else:
        raise TypeError(f"--activations: expected names, got {type(activations).__name__}")
    if len(names) > 2:
        raise ValueError(
            f"--activations with --recurrent takes one or two names (cell, output), got "
            f"{len(names)}"
        )
    needed = get_loss(loss).requires_output
    cell = names[0] if names else "tanh"
    output = names[1] if len(names) == 2 else (needed or "identity")
    return cell, output


def _positive(name: str, value: object) -> int:
    """``value`` if it is a positive integer, else a ValueError naming ``--name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"--{name} must be a positive integer, got {value!r}")
    return value


def recurrent_steps(
    args: argparse.Namespace, defaults: Mapping[str, int] = RECURRENT_DEFAULTS
) -> tuple[int, str]:
    """(T, outputs_at) of ``--steps`` and ``--outputs-at``, with the defaults filled in."""
    steps = getattr(args, "steps", None)
    steps = _positive("steps", defaults["steps"] if steps is None else steps)
    return steps, getattr(args, "outputs_at", None) or "last"


def step_sizes(
    args: argparse.Namespace,
    features: int,
    targets: int,
    defaults: Mapping[str, int] = RECURRENT_DEFAULTS,
    data: str = "the data",
) -> tuple[int, int]:
    """(inputs, outputs) per step of time-major rows of ``features`` and ``targets`` values."""
    steps, at = recurrent_steps(args, defaults)
    every = at == "every"
    if features % steps or (every and targets % steps):
        outs = f" and {targets} targets" if every else ""
        raise ValueError(
            f"--steps {steps} does not divide {data}'s {features} features{outs} into steps"
        )
    return features // steps, targets // steps if every else targets


def recurrent_kwargs(
    args: argparse.Namespace,
    inputs: int | None = None,
    outputs: int | None = None,
    *,
    defaults: Mapping[str, int] = RECURRENT_DEFAULTS,
    loss: str = "mse",
) -> dict[str, Any]:
    """``recurrent``'s keyword arguments; ``inputs``/``outputs`` known from data, else options."""
    loss = args.loss if _given(args, "loss") else loss
    sizes = {}
    for name, known in (("inputs", inputs), ("outputs", outputs)):
        option = getattr(args, name, None)
        if known is not None and option is not None:
            raise ValueError(f"--{name} is read from the data here; drop it")
        sizes[name] = known if known is not None else option
    sizes["hidden"] = getattr(args, "hidden", None)
    sizes = {n: _positive(n, defaults[n] if v is None else v) for n, v in sizes.items()}
    steps, outputs_at = recurrent_steps(args, defaults)
    cell, output = recurrent_activations(getattr(args, "activations", None), loss)
    return sizes | {
        "steps": steps,
        "activation": cell,
        "output_activation": output,
        "loss": loss,
        "outputs_at": outputs_at,
    }


def read_graph(path: str) -> GraphSpec:
    """The graph in the JSON file ``path``: at most ``MAX_GRAPH_BYTES``, UTF-8, validated."""
    what = f"--graph {shown(path)}"
    if not os.path.exists(path):
        raise ValueError(f"{what}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{what}: not a regular file")
    size = os.path.getsize(path)
    if size > MAX_GRAPH_BYTES:
        raise ValueError(
            f"{what} is {size:,} bytes, more than the {MAX_GRAPH_BYTES:,} a graph takes"
        )
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_GRAPH_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{what} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_GRAPH_BYTES:
        raise ValueError(f"{what} is more than the {MAX_GRAPH_BYTES:,} bytes a graph takes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return graph_from_json(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def check_graph_options(args: argparse.Namespace) -> None:
    """Refuse ``--graph`` with ``--recurrent``/``--activations``/``--loss``, strays without it."""
    path, rnn = getattr(args, "graph", None), bool(getattr(args, "recurrent", False))
    if path is not None and rnn:
        raise ValueError("give --graph FILE or --recurrent, not both")
    if not rnn:
        stray = [n for n in RECURRENT_ONLY if _given(args, n)]
        if stray:
            raise ValueError(f"--{stray[0].replace('_', '-')} needs --recurrent")
    if path is not None and (_given(args, "activations") or _given(args, "loss")):
        raise ValueError("--graph FILE names its activations and loss; drop --activations/--loss")


def recurrent_from_args(
    args: argparse.Namespace,
    inputs: int | None = None,
    outputs: int | None = None,
    *,
    defaults: Mapping[str, int] = RECURRENT_DEFAULTS,
    loss: str = "mse",
) -> GraphSpec:
    """The Elman network ``--recurrent`` asks for (arguments as for ``recurrent_kwargs``)."""
    kwargs = recurrent_kwargs(args, inputs, outputs, defaults=defaults, loss=loss)
    try:
        graph = recurrent(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--recurrent: {exc}") from None
    return with_weight_decay(graph, args)


def with_weight_decay(graph: GraphSpec, args: argparse.Namespace) -> GraphSpec:
    """The graph with ``--weight-decay α`` when given (it replaces a graph file's own α)."""
    alpha = getattr(args, "weight_decay", None)
    if alpha is None:
        return graph
    try:
        return dataclasses.replace(graph, weight_decay=alpha)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--weight-decay: {exc}") from None


def graph_from_args(
    args: argparse.Namespace, inputs: int | None = None, outputs: int | None = None
) -> GraphSpec | None:
    """The graph ``--graph`` or ``--recurrent`` asks for, or None when neither is given (then
    no recurrent option may be)."""
    check_graph_options(args)
    if getattr(args, "graph", None) is not None:
        return with_weight_decay(read_graph(args.graph), args)
    if not getattr(args, "recurrent", False):
        return None
    return recurrent_from_args(args, inputs, outputs)
