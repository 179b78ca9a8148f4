"""Time one training step of the exported module (``lbp.to_torch``: forward and backward printed
from the derived equations) against a plain ``nn.Sequential`` under torch autograd, and the
NumPy model's fused ``sgd_step``, side by side in one run.

Run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_torch.py [--threads T]
[--rounds R]``. A step is zero_grad, J, backward and ``torch.optim.SGD.step`` for both torch
modules (J: the spec's own loss for ours, ``F.cross_entropy`` on the logits for nn.Sequential),
on the same parameters and batch. Each round times every trainer back to back in a rotating
order; figures are medians over rounds of the mean step time, and the ratio is the median over
rounds of that round's ours/nn.Sequential (the two timed a moment apart, under the same load
of a shared machine). Target: ours ≤ 1.2× nn.Sequential.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

import lagrange_bp as lbp

TARGET = 1.2
# (name, widths, batch, dtype, steps per timing, rounds)
CASES = [
    ("digits 64-128-10, B 32", (64, 128, 10), 32, d, 50, 60) for d in ("float32", "float64")
] + [
    ("784-1024-1024-10, B 256", (784, 1024, 1024, 10), 256, d, 4, 10)
    for d in ("float32", "float64")
]


def spec_of(widths: tuple[int, ...]) -> lbp.NetworkSpec:
    acts = ("tanh",) * (len(widths) - 2) + ("softmax",)
    return lbp.NetworkSpec(widths, acts, "cross_entropy")


def trainers(
    spec: lbp.NetworkSpec, batch: int, dtype: str
) -> tuple[dict[str, Callable[[], None]], Callable[[], float]]:
    """One step of each trainer on one batch, and the largest parameter difference between
    ours and nn.Sequential after a step from the same start."""
    rng = np.random.default_rng(0)
    X = rng.random((batch, spec.widths[0])).astype(dtype)
    Y = np.eye(spec.widths[-1], dtype=dtype)[rng.integers(0, spec.widths[-1], batch)]
    tdtype = getattr(torch, dtype)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    module = lbp.to_torch(spec, tdtype, seed=0)
    layers: list[torch.nn.Module] = []
    for (W, b), act in zip(module.to_numpy(), spec.activations):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(W))
            lin.bias.copy_(torch.tensor(b))
        layers += [lin] + ([torch.nn.Tanh()] if act == "tanh" else [])
    seq = torch.nn.Sequential(*layers)
    opt_ours = torch.optim.SGD(module.parameters(), lr=0.01)
    opt_seq = torch.optim.SGD(seq.parameters(), lr=0.01)
    model = lbp.compile(spec, dtype)
    params = model.init_params(0)

    def ours() -> None:
        opt_ours.zero_grad()
        module(Xt, Yt).backward()
        opt_ours.step()

    def sequential() -> None:
        opt_seq.zero_grad()
        F.cross_entropy(seq(Xt), Yt).backward()
        opt_seq.step()

    def numpy() -> None:
        model.sgd_step(params, X, Y, 0.01, check=False)

    def gap() -> float:
        ours()
        sequential()
        got = [p.detach() for p in module.parameters()]
        ref = [p.detach() for p in seq.parameters()]
        return max(float((a - b).abs().max()) for a, b in zip(got, ref))

    return {"ours": ours, "nn.Sequential": sequential, "numpy": numpy}, gap


def timed(step: Callable[[], None], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):  # NumPy's BLAS too: no threads left spinning
        run(args)


def run(args: argparse.Namespace) -> None:
    print(f"torch {torch.__version__}, {args.threads} thread(s); median step time, ms")
    print("| case | dtype | ours | nn.Sequential | NumPy sgd_step | ours/nn.Sequential |")
    print("|---|---|---|---|---|---|")
    for name, widths, batch, dtype, steps, rounds in CASES:
        spec = spec_of(widths)
        steppers, gap = trainers(spec, batch, dtype)
        diff = gap()
        if diff > (1e-4 if dtype == "float32" else 1e-10):
            raise AssertionError(f"{name} {dtype}: ours and nn.Sequential differ by {diff:.2e}")
        for step in steppers.values():
            timed(step, steps)  # warm up
        times: dict[str, list[float]] = {k: [] for k in steppers}
        order = list(steppers)
        for r in range(args.rounds or rounds):
            for key in order[r % 3 :] + order[: r % 3]:
                times[key].append(timed(steppers[key], steps))
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        ratio = statistics.median(a / b for a, b in zip(times["ours"], times["nn.Sequential"]))
        mark = "" if ratio <= TARGET else " (above target)"
        print(
            f"| {name} | {dtype} | {med['ours']:.3f} | {med['nn.Sequential']:.3f} | "
            f"{med['numpy']:.3f} | {ratio:.2f}×{mark} |",
            flush=True,
        )
    print(f"target: ours/nn.Sequential ≤ {TARGET}×")


if __name__ == "__main__":
    main()
