"""Sequence datasets for recurrent graphs, generated from a seed (``datasets.load`` serves them).

Rows are sequences, time-major within a row as ``recurrent`` expects: X[:, (t−1)·n : t·n] is
step t's input x_t (n per step). Both are regression tasks (mse), not standardised.

* ``adding`` (Hochreiter & Schmidhuber's adding problem): each step is a pair (value, marker),
  values uniform in [0, 1]; exactly two markers are 1, one in each half of the sequence; the
  target is the sum of the two marked values (n = 2 per step; Y (samples, 1)). Always
  predicting the mean, 1, gives J = ½ Var = 1/12 ≈ 0.083 (mse); learning must beat it.
* ``sine``: noisy sine waves s_t = sin(ω t + φ) + ε_t, ω uniform in [0.15, 0.45], φ uniform,
  ε ~ N(0, 0.05²); X = s_1..s_T (n = 1 per step), Y the next value s_{T+1} (``outputs_at=
  "last"``) or s_2..s_{T+1}, one per step (``outputs_at="every"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .datasets import Dataset

SEQUENCES = ("adding", "sine")
DEFAULT_STEPS = 10
DEFAULT_SAMPLES = {"adding": 2000, "sine": 1000}
MAX_STEPS = 10_000
MAX_VALUES = 50_000_000  # samples × steps × features


def _count(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def adding(steps: int, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """X (samples, 2·steps): (value, marker) per step; Y (samples, 1): the marked values' sum."""
    values = rng.uniform(0.0, 1.0, size=(samples, steps))
    markers = np.zeros((samples, steps))
    half = steps // 2
    first = rng.integers(0, half, samples)
    second = rng.integers(half, steps, samples)
    rows = np.arange(samples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    X = np.stack([values, markers], axis=2).reshape(samples, 2 * steps)
    Y = (values[rows, first] + values[rows, second])[:, None]
    return X, Y


def sine(
    steps: int, samples: int, rng: np.random.Generator, every: bool
) -> tuple[np.ndarray, np.ndarray]:
    """X (samples, steps) = s_1..s_T; Y = s_{T+1} (samples, 1) or s_2..s_{T+1} (every step)."""
    omega = rng.uniform(0.15, 0.45, size=(samples, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(samples, 1))
    t = np.arange(1, steps + 2)[None, :]
    s = np.sin(omega * t + phase) + rng.normal(0.0, 0.05, size=(samples, steps + 1))
    return s[:, :steps], (s[:, 1:] if every else s[:, steps:])


def generate(
    name: str, *, seed: int = 0, steps: int | None = None, samples: int | None = None,
    outputs_at: str = "last",
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """X and Y of a sequence dataset (see the module docstring), from ``seed``."""
    if name not in SEQUENCES:
        raise ValueError(f"unknown sequence dataset {name!r}; known: {', '.join(SEQUENCES)}")
    if outputs_at not in ("last", "every"):
        raise ValueError(f"outputs_at must be 'last' or 'every', got {outputs_at!r}")
    T = _count(DEFAULT_STEPS if steps is None else steps, "steps", 2, MAX_STEPS)
    n = _count(DEFAULT_SAMPLES[name] if samples is None else samples, "samples", 8, MAX_VALUES)
    if n * T * 2 > MAX_VALUES:
        raise ValueError(f"{name}: {n} samples of {T} steps is above {MAX_VALUES:,} values")
    rng = np.random.default_rng(seed)
    if name == "adding":
        if outputs_at == "every":
            raise ValueError("adding has one target per sequence: use outputs_at='last'")
        return adding(T, n, rng)
    return sine(T, n, rng, outputs_at == "every")


def sequence_dataset(name: str, split_seed: int, test_size: float, **options: object) -> Dataset:
    """The dataset ``name`` generated from ``split_seed`` and split at random by it."""
    from .datasets import Dataset

    unknown = sorted(set(options) - {"steps", "samples", "outputs_at"})
    if unknown:
        raise ValueError(f"unknown options {unknown} for {name}; known: steps, samples, outputs_at")
    X, Y = generate(name, seed=split_seed, **options)  # type: ignore[arg-type]
    order = np.random.default_rng(split_seed).permutation(len(X))
    n_test = max(1, round(len(X) * test_size))
    test, train = order[:n_test], order[n_test:]
    label = f"{name} (T = {options.get('steps') or DEFAULT_STEPS})"
    return Dataset(label, X[train], Y[train], X[test], Y[test], "regression", [])
