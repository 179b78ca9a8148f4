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
        """One update of ``params`` in place with the gradient ``grads`` (same layout)."""
        theta = [a for pair in params for a in pair]
        g = [a for pair in grads for a in pair]
        if not self.slots:
            self.slots = {slot: [np.zeros_like(a) for a in theta] for slot in SLOTS[self.name]}
        self.steps += 1
        if self.name == "sgd":
            for p, d in zip(theta, g):
                p -= self.lr * d
        elif self.name in ("momentum", "nesterov"):
            for p, d, v in zip(theta, g, self.slots["velocity"]):
                if self.steps == 1:
                    v[...] = d
                else:
                    v *= self.momentum
                    v += d
                p -= self.lr * (d + self.momentum * v if self.name == "nesterov" else v)
        else:
            b1, b2 = self.betas
            c1, c2 = 1 - b1**self.steps, 1 - b2**self.steps
            for p, d, m, s in zip(theta, g, self.slots["m"], self.slots["s"]):
                m *= b1
                m += (1 - b1) * d
                s *= b2
                s += (1 - b2) * d * d
                p -= (self.lr / c1) * m / (np.sqrt(s) / math.sqrt(c2) + self.eps)

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
