"""``LagrangeMLPClassifier.fit`` against scikit-learn's ``MLPClassifier`` on digits, side by side.

Run ``python3 benchmarks/bench_sklearn.py [THREADS]``. Both fit all 1,797 digits images (scaled
to [0, 1]) with the same architecture (64-100-10, relu), batch 200, 100 epochs, no L2 penalty
and no early stopping (tol 0, n_iter_no_change ∞, so both run every epoch); after a one-epoch
warm-up fit of each (ours compiles the network's kernels once per process), the median of 7
interleaved rounds of wall time around ``fit``, and the spread of the rounds' ratios (the
machines are shared: a round's ratio moves with the load). Target: ours ≤ 0.5 × scikit-learn's.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run from anywhere
from lagrange_bp.sklearn import LagrangeMLPClassifier

EPOCHS, ROUNDS, TARGET = 100, 7, 0.5
COMMON: dict[str, Any] = dict(
    hidden_layer_sizes=(100,),
    activation="relu",
    batch_size=200,
    max_iter=EPOCHS,
    tol=0.0,
    n_iter_no_change=np.inf,
    random_state=0,
    alpha=0.0,
)
CASES: dict[str, dict[str, Any]] = {
    "sgd (Nesterov 0.9, sklearn's default)": dict(solver="sgd", learning_rate_init=0.1),
    "sgd (plain, momentum 0)": dict(solver="sgd", learning_rate_init=0.1, momentum=0.0),
    "adam": dict(solver="adam", learning_rate_init=0.001),
}


def main() -> None:
    warnings.simplefilter("ignore", ConvergenceWarning)  # both stop at max_iter by design
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else None
    print(f"digits, 64-100-10 relu, batch 200, {EPOCHS} epochs; median of {ROUNDS} rounds")
    with threadpool_limits(threads):
        for name, settings in CASES.items():
            times: dict[str, list[float]] = {"ours": [], "sklearn": []}
            for kind in (LagrangeMLPClassifier, MLPClassifier):  # warm-up: compile, caches
                kind(**{**COMMON, "max_iter": 1}, **settings).fit(X, y)
            for r in range(ROUNDS):
                for who in ("ours", "sklearn") if r % 2 == 0 else ("sklearn", "ours"):
                    kind = LagrangeMLPClassifier if who == "ours" else MLPClassifier
                    estimator = kind(**COMMON, **settings)
                    start = time.perf_counter()
                    estimator.fit(X, y)
                    times[who].append(time.perf_counter() - start)
                    assert estimator.n_iter_ == EPOCHS
            ours, theirs = statistics.median(times["ours"]), statistics.median(times["sklearn"])
            verdict = "met" if ours / theirs <= TARGET else "not met"
            rounds = sorted(o / s for o, s in zip(times["ours"], times["sklearn"]))
            print(
                f"{name:38} ours {ours:.3f} s, scikit-learn {theirs:.3f} s, "
                f"ratio {ours / theirs:.2f} (per round {rounds[0]:.2f}–{rounds[-1]:.2f}; "
                f"target ≤ {TARGET}: {verdict})"
            )


if __name__ == "__main__":
    main()
