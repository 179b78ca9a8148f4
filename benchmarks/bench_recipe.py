"""The README's digits recipe, seed by seed: test accuracy over seeds 0–4 (target: mean ≥ 97.5%).

Run ``python3 benchmarks/bench_recipe.py``. Each row trains from scratch on the digits training
split (1,347 images) and evaluates once on the held-out test split (450 images, never used for
any choice during training): the recipe (Adam on the derived gradient), and for comparison the
plain-SGD settings of the Quickstart demo.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run from anywhere
import lagrange_bp as lbp
from lagrange_bp.datasets import load

TARGET = 0.975
SEEDS = range(5)
RECIPES = {
    "recipe: Adam, lr 0.001, 60 epochs, batch 32": dict(optimizer="adam", lr=0.001, epochs=60),
    "demo: SGD, lr 0.1, 30 epochs, batch 32": dict(optimizer="sgd", lr=0.1, epochs=30),
}


def main() -> None:
    data = load("digits")
    spec = lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")
    model = lbp.compile(spec)
    print(f"{data.describe()}; network {spec.describe()}")
    for name, settings in RECIPES.items():
        start = time.perf_counter()
        accuracies = []
        for seed in SEEDS:
            result = lbp.train(
                model,
                data.X_train,
                data.Y_train,
                settings["epochs"],
                32,
                settings["lr"],
                seed=seed,
                optimizer=settings["optimizer"],
            )
            accuracies.append(
                lbp.evaluate(model, result.params, data.X_test, data.Y_test)["accuracy"]
            )
        mean = statistics.mean(accuracies)
        per_seed = "  ".join(f"{100 * a:.2f}" for a in accuracies)
        verdict = f"target ≥ {100 * TARGET:.1f}%: {'met' if mean >= TARGET else 'not met'}"
        print(
            f"{name}\n  seeds 0-4: {per_seed}  mean {100 * mean:.2f}%  ({verdict}); "
            f"{time.perf_counter() - start:.1f} s"
        )


if __name__ == "__main__":
    main()
