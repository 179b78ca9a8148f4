"""Time grading a five-rule submission, as course staff call it, against the 5 s target.

Run ``python3 benchmarks/bench_grade.py``. Two ways in, each the median of 5 runs of wall time
(``time.perf_counter``) around the whole call, child processes included:

* ``lbp.grade(spec, "submission.py")`` from a Python process that has already imported the
  package (a course's grading script);
* ``lagrange-bp grade submission.py --widths 3,4,2 ...`` as a fresh process (the CLI, with its
  own import of the package).

For scale, the same five rules checked in this process with ``check_rule`` (no isolation), and
the bare start of a Python process that imports NumPy (the floor of any isolated run).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run from anywhere
import lagrange_bp as lbp

TARGET_S = 5.0
REPEATS = 5
SPEC = lbp.NetworkSpec((3, 4, 2), ("tanh", "sigmoid"), "mse")
SUBMISSION = """
def forward(W, b, x_prev, sigma):
    return sigma(x_prev @ W.T + b)

def output_adjoint(x_out, y, batch_size):
    return (y - x_out) / batch_size

def adjoint(W_next, z_next, lam_next, dsigma_next):
    return (dsigma_next(z_next) * lam_next) @ W_next

def weight_gradient(z, lam, x_prev, dsigma):
    return -(dsigma(z) * lam).T @ x_prev

def bias_gradient(z, lam, dsigma):
    return -(dsigma(z) * lam).mean(axis=0)  # the usual slip: 1/B twice
"""


def median_seconds(run: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "submission.py"
        path.write_text(SUBMISSION)
        namespace: dict[str, object] = {}
        exec(SUBMISSION, namespace)
        result = lbp.grade(SPEC, path)  # warm-up, and the figure we print
        assert result.score == 4 and result.rules["bias_gradient"].mistake == "batch_factor"
        cli = [
            sys.executable,
            "-m",
            "lagrange_bp",
            "grade",
            str(path),
            "--widths",
            "3,4,2",
            "--activations",
            "tanh,sigmoid",
        ]
        rows = [
            ("lbp.grade (5 rules, 5 processes)", median_seconds(lambda: lbp.grade(SPEC, path))),
            (
                "lagrange-bp grade (fresh CLI process)",
                median_seconds(lambda: subprocess.run(cli, capture_output=True, check=False)),
            ),
            (
                "check_rule × 5 in this process",
                median_seconds(
                    lambda: [
                        lbp.check_rule(SPEC, rule, namespace[rule]) for rule in lbp.rules.RULES
                    ]
                ),
            ),
            (
                "python -c 'import numpy' (floor)",
                median_seconds(
                    lambda: subprocess.run([sys.executable, "-c", "import numpy"], check=False)
                ),
            ),
        ]
    print(f"grading a five-rule submission on {SPEC.describe()}: median of {REPEATS}, wall time")
    print(f"{'':40} {'seconds':>8}  target")
    for name, seconds in rows:
        target = f"≤ {TARGET_S:g} s: {'met' if seconds <= TARGET_S else 'MISSED'}"
        shown = target if name.startswith(("lbp.grade", "lagrange-bp")) else ""
        print(f"{name:40} {seconds:8.2f}  {shown}")
    print(f"verdict: {result.score:g} / {result.max_score:g}, {result.first_wrong} wrong")


if __name__ == "__main__":
    main()
