"""Step 1 of the pipeline: the network to derive, validated at the public boundary.

An N-layer perceptron x^k = σ_k(W^k x^{k-1} + b^k), k = 1..N, with widths n_0..n_N, a
per-sample loss ℓ(y, x^N) and an optional weight decay α: the objective is
J = (1/B) Σ_i ℓ(y⁽ⁱ⁾, x^{N,(i)}) + (α/2) Σ_k ‖W^k‖² (biases are not decayed; CONVENTIONS §1).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .functions import ACTIVATIONS, LOSSES, get_activation, get_loss
from .numerics import check_loss

#: Default limit on the number of weight entries Σ_k n_k·n_{k-1} of an exact derivation:
#: derive + verify take about 2 ms per weight on a 2-core machine (64-128-10, 9,472 weights,
#: about 20 s), so the limit is about 50 s of work. Time grows linearly beyond.
MAX_EXACT_WEIGHTS = 25_000
#: Memory of an exact derivation and its verification, per weight entry: 14–18 KiB measured
#: (peak RSS of derive + verify on 2-250-2 and 2-1000-2). With the limit lifted, a network whose
#: derivation cannot fit in memory is still refused, before SymPy starts.
EXACT_BYTES_PER_WEIGHT = 16 << 10


@dataclass(frozen=True)
class NetworkSpec:
    """Widths n_0..n_N, one activation per layer 1..N, and the loss.

    ``activations`` may be one name for every layer or exactly N names: built-in names or
    expressions in z; ``loss`` a built-in name or an expression in x and y. Expressions are
    parsed safely and stored in canonical form (``"log(1 + exp(z))"`` becomes
    ``"log(exp(z) + 1)"``); one that cannot be compiled is refused here with ``ValueError``.
    ``weight_decay`` is α ≥ 0 of the objective's (α/2) Σ_k ‖W^k‖² (0: no such term).
    """

    widths: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str = "mse"
    weight_decay: float = 0.0

    def __init__(
        self,
        widths: Sequence[int],
        activations: str | Sequence[str] = "sigmoid",
        loss: str = "mse",
        weight_decay: float = 0.0,
    ) -> None:
        object.__setattr__(self, "widths", _check_widths(widths))
        n_layers = len(self.widths) - 1
        object.__setattr__(self, "activations", _check_activations(activations, n_layers))
        object.__setattr__(self, "loss", checked_loss(loss, self.activations))
        object.__setattr__(self, "weight_decay", checked_weight_decay(weight_decay))

    @property
    def decay(self) -> Fraction:
        """α as the exact rational its decimal form reads (0.01 is 1/100), for exact proofs."""
        return exact_decay(self.weight_decay)

    @property
    def depth(self) -> int:
        """N, the number of layers with parameters."""
        return len(self.widths) - 1

    @property
    def n_weights(self) -> int:
        """Σ_k n_k·n_{k-1}, the number of weight entries."""
        return sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:]))

    @property
    def n_params(self) -> int:
        """Number of weight and bias entries."""
        return self.n_weights + sum(self.widths[1:])

    def describe(self) -> str:
        """One line such as ``2-3-1, sigmoid/sigmoid, mse``."""
        records = [get_activation(a) for a in self.activations]
        joint = "/" if all(r.builtin for r in records) else " | "  # "/" is also division
        acts = joint.join(r.text for r in records)
        decay = f", weight decay {self.weight_decay!r}" if self.weight_decay else ""
        return f"{'-'.join(map(str, self.widths))}, {acts}, {get_loss(self.loss).text}{decay}"

    def check_exact_size(self, max_weights: int | None = MAX_EXACT_WEIGHTS) -> None:
        """Raise ``ValueError`` when an exact elementwise derivation would be too large.

        ``max_weights=None`` lifts the limit.
        """
        name = f"network {'-'.join(map(str, self.widths))}"
        check_derivation_memory(name, self.n_weights)
        if max_weights is not None and self.n_weights > max_weights:
            raise ValueError(
                f"{name} has {self.n_weights} weights, above "
                f"the exact-derivation limit of {max_weights} (one SymPy symbol per entry, about "
                f"2 ms per weight to derive and verify). For any size, prove the equations for "
                f"every depth and width with verify --general, and the compiled code of this very "
                f"network with verify --compiled (lbp.verify(lbp.compile(spec))); or raise the "
                f"limit with max_weights=... (CLI: --max-weights N, 0 for none)."
            )


def check_derivation_memory(name: str, n_weights: int) -> None:
    """Refuse, with the numbers, an exact derivation that cannot fit in this machine's memory
    (whatever ``max_weights`` says: lifting the limit must not end in an exhausted machine)."""
    need, have = n_weights * EXACT_BYTES_PER_WEIGHT, available_memory()
    if need > have:
        raise ValueError(
            f"{name} has {n_weights:,} weights: an exact derivation needs about "
            f"{need / 2**30:,.1f} GiB (one SymPy symbol and its expressions per weight, about "
            f"{EXACT_BYTES_PER_WEIGHT >> 10} KiB each), more than this machine's "
            f"{have / 2**30:,.1f} GiB of memory. For any size, prove the equations for every "
            f"depth and width with verify --general, and the compiled code of this very network "
            f"with verify --compiled (lbp.verify(lbp.compile(spec)))."
        )


@functools.cache
def available_memory() -> int:
    """Bytes of physical memory (os.sysconf), or 64 GiB where the system does not say; read
    once per process (a training call checks it)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 64 << 30


def _check_widths(widths: object) -> tuple[int, ...]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(
            f"widths must be a sequence of positive integers such as (2, 3, 1), got {widths!r}"
        )
    if len(widths) < 2:
        raise ValueError(
            f"widths needs at least two entries (input width n_0 and output width n_N), "
            f"got {tuple(widths)!r}"
        )
    for k, n in enumerate(widths):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"widths[{k}] must be a positive integer, got {n!r}")
        if n <= 0:
            raise ValueError(f"widths[{k}] must be a positive integer, got {n}")
    return tuple(int(n) for n in widths)


def _check_activations(activations: object, n_layers: int) -> tuple[str, ...]:
    names: tuple[object, ...]
    if isinstance(activations, str):
        names = (activations,) * n_layers
    elif isinstance(activations, Sequence):
        names = tuple(activations)
        if len(names) == 1:
            names = names * n_layers
    else:
        raise TypeError(f"activations must be a name or a sequence of names, got {activations!r}")
    if len(names) != n_layers:
        expected = (
            "1 name (the network has one layer)"
            if n_layers == 1
            else f"1 or {n_layers} names (one per layer 1..{n_layers})"
        )
        raise ValueError(f"activations: expected {expected}, got {len(names)}")
    keys = []
    for k, name in enumerate(names, start=1):
        if not isinstance(name, str):
            raise TypeError(f"activation of layer {k} must be a string, got {type(name).__name__}")
        try:
            keys.append(get_activation(name).key)
        except ValueError as exc:
            if name.strip().isidentifier():
                raise ValueError(
                    f"unknown activation {shown_name(name)} for layer {k}; known: "
                    f"{', '.join(ACTIVATIONS)}, or an expression in z such as "
                    f"'z*tanh(softplus(z))'"
                ) from None
            raise ValueError(f"layer {k}: {exc}") from None
    return tuple(keys)


def checked_loss(loss: object, activations: tuple[str, ...]) -> str:
    """The loss's canonical key (a built-in name or a parsed expression), or a clear error."""
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a string, got {type(loss).__name__}")
    try:
        record = get_loss(loss)
    except ValueError:
        if loss.strip().isidentifier():
            raise ValueError(
                f"unknown loss {shown_name(loss)}; known: {', '.join(LOSSES)}, or an expression in "
                f"x (output) and y (target) such as 'log(cosh(x - y))'"
            ) from None
        raise
    output = get_activation(activations[-1])
    if record.requires_output is not None and output.key != record.requires_output:
        raise ValueError(
            f"loss {record.text!r} needs a {record.requires_output} output layer, but layer "
            f"{len(activations)} is {output.text!r}; use activations ending in "
            f"{record.requires_output!r}"
        )
    if not record.builtin:
        check_loss(record, output)
    return record.key


def checked_weight_decay(alpha: object) -> float:
    """α as a float, or a clear error unless it is a finite number ≥ 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"weight_decay must be a number α ≥ 0, got {type(alpha).__name__}")
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"weight_decay must be a finite number α ≥ 0, got {alpha!r}")
    return alpha


def exact_decay(alpha: float) -> Fraction:
    """α as the exact rational its decimal form reads (0.01 is 1/100)."""
    return Fraction(repr(alpha))


def shown_name(name: str) -> str:
    """A user's name for an error message: printable characters only, and short."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)
    return repr(clean if len(clean) <= 40 else clean[:37] + "...")
