"""Time one training step of compiled graphs against hand-written NumPy and PyTorch eager.

Run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_graph.py
[--rounds R]``. Cases: the Elman RNN of ``lbp.recurrent`` (hidden 128, T = 20, B 32, tanh
cell, identity output at the last step, mse) against ``hand_bptt.HandRNN`` (target ≤ 1.10×);
a residual MLP on digits (64 → 128 → 128, skip, 128, skip → softmax 10, B 32) against
``hand_bptt.HandResidual`` (target ≤ 1.05×). A step is the generated ``sgd_step`` (check=False,
as ``lbp.train`` calls it), the hand-written ``sgd_step``, and for PyTorch eager: zero_grad,
the unrolled graph under autograd, backward and ``torch.optim.SGD.step``. All start from the
same parameters and must end one step later with the same ones; one BLAS thread; each round
times the trainers back to back in a rotating order, figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from hand_bptt import HandResidual, HandRNN
from threadpoolctl import threadpool_limits

import lagrange_bp as lbp
from lagrange_bp.datasets import load

LR = 0.01


def residual_spec() -> lbp.GraphSpec:
    g = lbp.Graph(inputs=64)
    h1 = g.layer(g.inputs[0], 128, "tanh", name="h1")
    h2 = g.layer(h1, 128, "tanh", name="h2")
    s = g.add(h1, h2, name="s")
    h3 = g.layer(s, 128, "tanh", name="h3")
    s2 = g.add(s, h3, name="s2")
    return g.output(g.layer(s2, 10, "softmax", name="out"), loss="cross_entropy")


def torch_step(spec: lbp.GraphSpec, params: dict, X: np.ndarray, Y: np.ndarray) -> Callable:
    """One PyTorch eager step of the same graph (its nodes in order, autograd backward)."""
    import torch

    theta = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.SGD(list(theta.values()), lr=LR)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    acts = {"tanh": torch.tanh, "identity": lambda z: z, "softmax": lambda z: z}

    def step() -> None:
        opt.zero_grad()
        x, start = {}, 0
        for n in spec.nodes:
            if n.op == "input":
                x[n.name] = Xt[:, start : start + n.width]
                start += n.width
            elif n.op == "add":
                x[n.name] = sum(x[u] for u in n.inputs)
            elif n.op == "layer":
                used = [(w, u) for w, u in zip(n.weight_names, n.inputs) if u in x]
                z = torch.addmm(theta[n.bias_name], x[used[0][1]], theta[used[0][0]].T)
                for w, u in used[1:]:
                    z = torch.addmm(z, x[u], theta[w].T)
                x[n.name] = acts[n.activation](z)
        out = x[spec.outputs[-1]]
        if spec.loss == "cross_entropy":
            J = torch.nn.functional.cross_entropy(out, Yt)
        else:
            J = 0.5 * ((out - Yt) ** 2).sum() / len(Xt)
        J.backward()
        opt.step()

    step.theta = theta  # type: ignore[attr-defined]
    return step


def case(name: str, spec: lbp.GraphSpec, hand: object, X: np.ndarray, Y: np.ndarray) -> dict:
    model = lbp.compile(spec)
    start = model.init_params(0)
    ours_p = {k: v.copy() for k, v in start.items()}
    hand_p = {k: v.copy() for k, v in start.items()}
    trainers: dict[str, Callable[[], object]] = {
        "ours": lambda: model.sgd_step(ours_p, X, Y, LR, check=False),
        "hand": lambda: hand.sgd_step(hand_p, X, Y, LR),  # type: ignore[attr-defined]
    }
    try:
        trainers["torch"] = torch_step(spec, start, X, Y)
    except ImportError:
        pass
    for fn in trainers.values():  # one step each from the same start: the same parameters
        fn()
    gap = max(float(np.abs(ours_p[k] - hand_p[k]).max()) for k in start)
    if "torch" in trainers:
        theta = trainers["torch"].theta  # type: ignore[attr-defined]
        gap = max(
            gap, max(float(np.abs(ours_p[k] - theta[k].detach().numpy()).max()) for k in start)
        )
    assert gap < 1e-12, f"{name}: parameters differ by {gap:g} after one step"
    return {"name": name, "trainers": trainers}


def timed(fn: Callable[[], object], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    T, H, B = 20, 128, 32
    rnn = lbp.recurrent(inputs=1, hidden=H, outputs=1, steps=T)
    Xr, Yr = rng.normal(size=(B, T)), rng.normal(size=(B, 1))
    digits = load("digits")
    Xd, Yd = digits.X_train[:B].copy(), digits.Y_train[:B].copy()
    cases = [
        (case(f"RNN hidden {H}, T = {T}, B {B}", rnn, HandRNN(1, H, 1, T, B), Xr, Yr), 1.10),
        (
            case(
                f"residual MLP digits 64-128×3-10, B {B}",
                residual_spec(),
                HandResidual(64, 128, 10, B),
                Xd,
                Yd,
            ),
            1.05,
        ),
    ]
    print(f"median ms per training step over {args.rounds} rounds of {args.steps} steps, 1 thread")
    print("| case | ours | hand NumPy | PyTorch eager | ours/hand | target | PyTorch/ours |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(1):
        import torch

        torch.set_num_threads(1)
        for c, target in cases:
            names = list(c["trainers"])
            times: dict[str, list[float]] = {n: [] for n in names}
            for r in range(args.rounds):
                for n in names[r % len(names) :] + names[: r % len(names)]:
                    times[n].append(timed(c["trainers"][n], args.steps))
            med = {n: statistics.median(v) for n, v in times.items()}
            ratio = med["ours"] / med["hand"]
            pt = med.get("torch", float("nan"))
            print(
                f"| {c['name']} | {med['ours']:.3f} | {med['hand']:.3f} | {pt:.3f} | "
                f"{ratio:.3f}× | ≤ {target:.2f}× | {pt / med['ours']:.2f}× |"
            )


if __name__ == "__main__":
    main()
