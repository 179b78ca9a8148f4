"""Update rules on top of the derived gradient ∂L/∂θ: plain SGD, heavy-ball and Nesterov
momentum, and Adam, each exactly as ``torch.optim`` defines it (so that the two agree step by
step), with a state that can be saved and restored to resume training exactly.

The derivation gives the gradient g = ∂L/∂θ (= ∂J/∂θ at the KKT point); these rules only decide
how a step uses it. With t the step count (from 1) and η the learning rate:

* ``sgd``:       θ ← θ − η g
* ``momentum``:  v ← μ v + g (v = g at the first step), θ ← θ − η v       (torch: momentum=μ)
* ``nesterov``:  v as above, θ ← θ − η (g + μ v)                          (torch: nesterov=True)
* ``adam``:      m ← β₁ m + (1 − β₁) g, s ← β₂ s + (1 − β₂) g²,
                 θ ← θ − (η / (1 − β₁ᵗ)) m / (√s / √(1 − β₂ᵗ) + ε),
                 computed as θ − (η √(1 − β₂ᵗ) / (1 − β₁ᵗ)) m / (√s + ε √(1 − β₂ᵗ)):
                 the same number, with one pass over the parameters fewer

A step is entrywise, so it can run on every parameter at once: ``Optimizer.step_flat`` takes the
parameters and the gradient each as one flat array (``pack`` makes one, with the per-layer
arrays as views of it), and does the arithmetic of ``step`` — the same operations in the same
order, so the same numbers bit for bit — in a handful of NumPy calls whatever the depth. The
slot arrays (velocity, m, s) are kept the same way, one flat array with a view per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import Params

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SLOTS = {"sgd": (), "momentum": ("velocity",), "nesterov": ("velocity",), "adam": ("m", "s")}


def pack(
    arrays: Sequence[np.ndarray], dtype: Any = None, *, copy: bool = True
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One flat C-contiguous array holding ``arrays`` end to end (their values with ``copy``,
    zeros without), and views of it shaped like them, in order: a step on the flat array
    updates every view. ``dtype`` defaults to the arrays' common type."""
    dtype = np.result_type(*arrays) if dtype is None else np.dtype(dtype)
    flat = (np.empty if copy else np.zeros)(sum(a.size for a in arrays), dtype)
    views, start = [], 0
    for a in arrays:
        view = flat[start : start + a.size].reshape(a.shape)
        if copy:
            view[...] = a
        views.append(view)
        start += a.size
    return flat, views


def pack_params(params: Params, dtype: Any = None) -> tuple[np.ndarray, Params]:
    """A copy of the (W^k, b^k) pairs in one flat array (W^1, b^1, W^2, …, in that order) and
    the pairs as views of it: what ``Optimizer.step_flat`` updates in one go."""
    flat, views = pack([a for pair in params for a in pair], dtype)
    return flat, [(views[i], views[i + 1]) for i in range(0, len(views), 2)]


@dataclass
class Optimizer:
    """An update rule with its hyperparameters and state (one array per W^k, b^k and slot;
    the slots of one name are views of one flat array)."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    steps: int = 0
    slots: dict[str, list[np.ndarray]] = field(default_factory=dict)
    #: two work arrays per parameter, so that a step allocates nothing (not part of the state)
    work: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    #: the slots as flat arrays (``slots`` holds views of them) and two flat work arrays
    flat: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    flat_work: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        for label, value, low in (("momentum", self.momentum, 0.0), ("eps", self.eps, 0.0)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
                raise ValueError(f"{label} must be a finite number ≥ {low:g}, got {value!r}")
        if self.name in ("momentum", "nesterov") and not 0 < self.momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {self.momentum!r}")
        if not (
            len(self.betas) == 2
            and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.slots:
            self._pack_slots([a.shape for a in next(iter(self.slots.values()))])

    def step(self, params: Params, grads: Params) -> None:
        """One update of ``params`` in place with the gradient ``grads`` (same layout); the
        same arithmetic, in the same order, as the formulas above, into work arrays."""
        theta = [a for pair in params for a in pair]
        g = [a for pair in grads for a in pair]
        if not self.slots and SLOTS[self.name]:
            self._pack_slots([a.shape for a in theta], np.result_type(*theta))
        if len(self.work) != len(theta) or any(
            w.shape != a.shape for (w, _), a in zip(self.work, theta)
        ):
            self.work = [(np.empty_like(a), np.empty_like(a)) for a in theta]
        self.steps += 1
        if self.name == "sgd":
            for p, d, (t, _) in zip(theta, g, self.work):
                np.multiply(d, self.lr, out=t)
                p -= t
        elif self.name in ("momentum", "nesterov"):
            for p, d, v, (t, _) in zip(theta, g, self.slots["velocity"], self.work):
                self._momentum(p, d, v, t)
        else:
            for p, d, m, s, (u, t) in zip(theta, g, self.slots["m"], self.slots["s"], self.work):
                self._adam(p, d, m, s, u, t)

    def step_flat(
        self, theta: np.ndarray, g: np.ndarray, shapes: Sequence[tuple[int, ...]]
    ) -> None:
        """``step`` on every parameter at once: ``theta`` and ``g`` hold the parameters and
        the gradient end to end (``pack_params``; ``shapes`` are the parameters' shapes, in
        order, for the slots the state reports per parameter). The same arithmetic in the
        same order as ``step``, so the same result bit for bit, in a few NumPy calls. ``g``
        is overwritten (Adam's last passes run in it): it is the gradient buffer that the
        next ``loss_and_grad`` writes again, and one array less keeps a step in cache."""
        if len(self.flat_work) != 2 or self.flat_work[0].size != theta.size:
            self._pack_slots(shapes, theta.dtype)
            self.flat_work = (np.empty_like(theta), np.empty_like(theta))
        t, u = self.flat_work
        self.steps += 1
        if self.name == "sgd":
            np.multiply(g, self.lr, out=t)
            np.subtract(theta, t, out=theta)
        elif self.name in ("momentum", "nesterov"):
            self._momentum(theta, g, self.flat["velocity"], t)
        else:
            self._adam(theta, g, self.flat["m"], self.flat["s"], u, g)

    def _momentum(self, p: np.ndarray, d: np.ndarray, v: np.ndarray, t: np.ndarray) -> None:
        if self.steps == 1:
            np.copyto(v, d)
        else:
            np.multiply(v, self.momentum, out=v)
            np.add(v, d, out=v)
        if self.name == "nesterov":  # η (g + μ v)
            np.multiply(v, self.momentum, out=t)
            np.add(d, t, out=t)
            np.multiply(t, self.lr, out=t)
        else:
            np.multiply(v, self.lr, out=t)
        np.subtract(p, t, out=p)

    def _adam(
        self,
        p: np.ndarray,
        d: np.ndarray,
        m: np.ndarray,
        s: np.ndarray,
        u: np.ndarray,
        t: np.ndarray,
    ) -> None:
        """One Adam step of p with the gradient d; u and t are work arrays, and t may be d
        itself (d is not read once t is written)."""
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.steps, math.sqrt(1 - b2**self.steps)
        np.multiply(m, b1, out=m)
        np.multiply(d, 1 - b1, out=u)
        np.add(m, u, out=m)
        np.multiply(s, b2, out=s)
        np.multiply(d, 1 - b2, out=u)
        np.multiply(u, d, out=u)
        np.add(s, u, out=s)
        np.sqrt(s, out=u)  # √s + ε √(1 − β₂ᵗ)
        np.add(u, self.eps * c2, out=u)
        np.divide(m, u, out=t)  # (η √(1 − β₂ᵗ) / (1 − β₁ᵗ)) m / (√s + ε √(1 − β₂ᵗ))
        np.multiply(t, self.lr * c2 / c1, out=t)
        np.subtract(p, t, out=p)

    def _pack_slots(self, shapes: Sequence[tuple[int, ...]], dtype: Any = None) -> None:
        """Every slot as one flat array with a view per parameter: zeros for a fresh
        optimizer, the current values (from ``from_state``) otherwise."""
        shapes = [tuple(s) for s in shapes]
        missing = [name for name in SLOTS[self.name] if self.slots and name not in self.slots]
        if missing:
            raise ValueError(f"the {self.name} optimizer's state has no {missing[0]!r} arrays")
        self.flat, slots = {}, {}
        for name in SLOTS[self.name]:
            given = self.slots.get(name)
            if given is not None and [a.shape for a in given] != shapes:
                raise ValueError(
                    f"the optimizer's {name!r} arrays have shapes "
                    f"{[a.shape for a in given]}, but the parameters {shapes}"
                )
            arrays = given if given is not None else [np.empty(s, dtype) for s in shapes]
            self.flat[name], slots[name] = pack(arrays, dtype, copy=given is not None)
        self.slots = slots

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: hyperparameters, step count, slot arrays."""
        return {
            "name": self.name,
            "lr": self.lr,
            "momentum": self.momentum,
            "betas": list(self.betas),
            "eps": self.eps,
            "steps": self.steps,
            "slots": {k: [a.copy() for a in v] for k, v in self.slots.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Optimizer:
        return cls(
            state["name"],
            float(state["lr"]),
            float(state["momentum"]),
            (float(state["betas"][0]), float(state["betas"][1])),
            float(state["eps"]),
            int(state["steps"]),
            {k: [np.array(a) for a in v] for k, v in state.get("slots", {}).items()},
        )
