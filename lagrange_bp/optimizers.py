"""Update rules on top of the derived gradient ∂L/∂θ: plain SGD, heavy-ball and Nesterov
momentum, and Adam, each exactly as ``torch.optim`` defines it (so that the two agree step by
step), with a state that can be saved and restored to resume training exactly.

The derivation gives the gradient g = ∂L/∂θ (= ∂J/∂θ at the KKT point); these rules only decide
how a step uses it. With t the step count (from 1) and η the learning rate:

* ``sgd``:       θ ← θ − η g
* ``momentum``:  v ← μ v + g (v = g at the first step), θ ← θ − η v       (torch: momentum=μ)
* ``nesterov``:  v as above, θ ← θ − η (g + μ v)                          (torch: nesterov=True)
* ``adam``:      m ← β₁ m + (1 − β₁) g, s ← β₂ s + (1 − β₂) g²,
                 θ ← θ − (η / (1 − β₁ᵗ)) m / (√s / √(1 − β₂ᵗ) + ε)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import Params

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SLOTS = {"sgd": (), "momentum": ("velocity",), "nesterov": ("velocity",), "adam": ("m", "s")}


@dataclass
class Optimizer:
    """An update rule with its hyperparameters and state (one array per W^k, b^k and slot)."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    steps: int = 0
    slots: dict[str, list[np.ndarray]] = field(default_factory=dict)
    #: two work arrays per parameter, so that a step allocates nothing (not part of the state)
    work: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

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

    def step(self, params: Params, grads: Params) -> None:
        """One update of ``params`` in place with the gradient ``grads`` (same layout); the
        same arithmetic, in the same order, as the formulas above, into work arrays."""
        theta = [a for pair in params for a in pair]
        g = [a for pair in grads for a in pair]
        if not self.slots:
            self.slots = {slot: [np.zeros_like(a) for a in theta] for slot in SLOTS[self.name]}
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
                if self.steps == 1:
                    v[...] = d
                else:
                    v *= self.momentum
                    v += d
                if self.name == "nesterov":  # η (g + μ v)
                    np.multiply(v, self.momentum, out=t)
                    np.add(d, t, out=t)
                    t *= self.lr
                else:
                    np.multiply(v, self.lr, out=t)
                p -= t
        else:
            self._adam(theta, g)

    def _adam(self, theta: list[np.ndarray], g: list[np.ndarray]) -> None:
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.steps, 1 - b2**self.steps
        for p, d, m, s, (t, u) in zip(theta, g, self.slots["m"], self.slots["s"], self.work):
            m *= b1
            np.multiply(d, 1 - b1, out=t)
            m += t
            s *= b2
            np.multiply(d, 1 - b2, out=t)
            t *= d
            s += t
            np.sqrt(s, out=u)  # √s / √(1 − β₂ᵗ) + ε
            u /= math.sqrt(c2)
            u += self.eps
            np.multiply(m, self.lr / c1, out=t)  # (η / (1 − β₁ᵗ)) m
            t /= u
            p -= t

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
        opt = cls(
            state["name"],
            float(state["lr"]),
            float(state["momentum"]),
            (float(state["betas"][0]), float(state["betas"][1])),
            float(state["eps"]),
            int(state["steps"]),
        )
        opt.slots = {k: [np.array(a) for a in v] for k, v in state.get("slots", {}).items()}
        return opt
