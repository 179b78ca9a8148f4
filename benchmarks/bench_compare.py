"""Time one SGD epoch of ours against HandTrainer, PyTorch eager and scikit-learn; then accuracy.

Run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/bench_compare.py [--quick]
[--threads T] [--rounds R] [--out FILE.md] [--plot FILE.png]``. All libraries get T threads.
Ours, hand and torch share the start (W, b) and batches; one float64 step of hand and torch must
match ours to rtol 1e-9. sklearn (own init) is timed on one ``partial_fit`` pass over the same
rows. Each round runs every trainer back to back in a rotating order; figures are medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import sklearn
import torch
import torch.nn.functional as F
from bench_train import Batches, Params, batches, copy, epoch, gemm_flops, gemm_peak
from hand_trainer import HandTrainer
from matplotlib.figure import Figure
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_info, threadpool_limits

import lagrange_bp as lbp
from lagrange_bp.datasets import load

TRAINERS = ("ours", "hand", "torch", "sklearn")
HAND_MAX, TORCH_MIN, GEMM_MIN, ACC_MIN = 1.05, 3.0, 70.0, 0.97
# (name, widths x⁰..x^N, batch, dtype, samples or None for sklearn digits, lr)
CASES = [
    ("digits", w, B, "float64", None, 0.1)
    for B in (32, 256)
    for w in ((64, 128, 10), (64, 256, 128, 10))
]
CASES += [
    (f"wide f{d[5:]}", (784, 1024, 1024, 10), 256, d, 8192, 0.01) for d in ("float32", "float64")
]
Trainer = tuple[list, list[np.ndarray], Callable[[], float]]  # (its arrays, start, one epoch)


def spec_of(widths: tuple[int, ...]) -> lbp.NetworkSpec:
    """Tanh hidden layers, softmax output, cross-entropy."""
    acts = ("tanh",) * (len(widths) - 2) + ("softmax",)
    return lbp.NetworkSpec(widths, acts, "cross_entropy")


def flat(params: Params) -> list[np.ndarray]:
    return [a for pair in params for a in pair]


def torch_step(tp: list[torch.Tensor], X: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
    """z^k = x^{k-1} W^kᵀ + b^k, x^k = tanh z^k; J = CE(softmax z^N); autograd; θ ← θ − lr ∂J/∂θ.

    ``tp`` = [W^1, b^1, W^2, ...] as leaf tensors; X (B, n_0); labels (B,) class indices.
    """
    x, n = X, len(tp) // 2
    for k in range(n):
        z = x @ tp[2 * k].T + tp[2 * k + 1]
        x = torch.tanh(z) if k < n - 1 else z
    F.cross_entropy(x, labels).backward()
    with torch.no_grad():
        for p in tp:
            p.add_(p.grad, alpha=-lr)
            p.grad = None


def leaves(params: Params) -> list[torch.Tensor]:
    return [torch.tensor(a, requires_grad=True) for a in flat(params)]


def to_torch(data: Batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.from_numpy(X), torch.from_numpy(Y.argmax(axis=1))) for X, Y in data]


def restore(dst: list, src: list[np.ndarray]) -> None:
    """Copy the start values back into a trainer's arrays or leaf tensors, in place."""
    with torch.no_grad():
        for d, s in zip(dst, src):
            d[...] = torch.from_numpy(s) if isinstance(d, torch.Tensor) else s


def trainers(
    widths: tuple[int, ...], batch: int, dtype: str, data: Batches, lr: float
) -> dict[str, Trainer]:
    """Per trainer: its arrays, their start values, one epoch; all but sklearn share (W, b)."""
    spec = spec_of(widths)
    model = lbp.compile(spec, dtype=dtype)
    hand = HandTrainer(widths, spec.activations, spec.loss, batch=batch, dtype=dtype)
    p0 = model.init_params(seed=0)
    ours, hp, tp, start = copy(p0), copy(p0), leaves(p0), flat(p0)
    out = {
        "ours": (
            flat(ours),
            start,
            partial(epoch, partial(model.sgd_step, check=False), ours, data, lr),
        ),
        "hand": (flat(hp), start, partial(epoch, hand.step, hp, data, lr)),
        "torch": (tp, start, partial(epoch, torch_step, tp, to_torch(data), lr)),
    }
    if dtype == "float64":  # sklearn: one partial_fit epoch over the same rows, batch B, no shuffle
        X, y = np.concatenate([X for X, _ in data]), np.concatenate([Y for _, Y in data]).argmax(1)
        clf = MLPClassifier(
            widths[1:-1],
            activation="tanh",
            solver="sgd",
            momentum=0.0,
            nesterovs_momentum=False,
            alpha=0.0,
            learning_rate_init=lr,
            batch_size=batch,
            shuffle=False,
            max_iter=1,
            random_state=0,
        )
        clf.partial_fit(X, y, classes=np.arange(widths[-1]))  # its own init
        own = clf.coefs_ + clf.intercepts_  # its optimizer updates these in place
        out["sklearn"] = (
            own,
            [a.copy() for a in own],
            partial(epoch, lambda _p, X, y, _lr: clf.partial_fit(X, y), [], [(X, y)], lr),
        )
    return out


def check_one_step(name: str, widths: tuple[int, ...], data: Batches, lr: float) -> None:
    """From the same start and first batch, hand and torch must give ours' weights (rtol 1e-9)."""
    X, Y = (a.astype(np.float64) for a in data[0])
    ts = trainers(widths, len(X), "float64", [(X, Y)], lr)
    for who in ("ours", "hand", "torch"):
        ts[who][2]()  # one step: that "epoch" has one batch
    for who in ("hand", "torch"):
        for i, (o, g) in enumerate(zip(ts["ours"][0], ts[who][0])):
            g = g.detach().numpy() if isinstance(g, torch.Tensor) else g
            if not np.allclose(g, o, rtol=1e-9, atol=1e-12 * float(np.abs(o).max())):
                raise AssertionError(
                    f"{name} {widths}: {'Wb'[i % 2]}^{i // 2 + 1} of {who} differs from ours "
                    f"after one float64 step; max |{who} − ours| = {np.abs(g - o).max():.3g}"
                )


def torch_peak(dtype: str, reps: int = 7) -> float:
    """Best GFLOP/s of ``torch.mm`` on 1024×1024 @ 1024×1024 with a preallocated output."""
    a = torch.rand(1024, 1024, dtype=getattr(torch, dtype))
    c, mm = torch.mm(a, a), lambda *_: torch.mm(a, a, out=c)
    return 2 * 1024**3 / 1e9 / min(epoch(mm, [], [(0, 0)], 0.0) for _ in range(reps))


def run_case(case: tuple, rounds: int, reps: int) -> dict[str, float]:
    """Median ms per epoch of each trainer over interleaved rounds (+ GEMM % for wide)."""
    name, widths, batch, dtype, samples, lr = case
    data = batches(widths, batch, dtype, samples)
    check_one_step(name, widths, data, lr)
    ts = trainers(widths, batch, dtype, data, lr)
    for *_, one_epoch in ts.values():  # warm-up
        one_epoch()
    times: dict[str, list[float]] = {who: [] for who in ts}
    for r in range(rounds):  # rotate who goes first; reverse every other round
        order = list(ts)[r % len(ts) :] + list(ts)[: r % len(ts)]
        for who in order if r % 2 == 0 else order[::-1]:
            state, start, one_epoch = ts[who]
            restore(state, start)
            times[who].append(sum(one_epoch() for _ in range(reps)) / reps * 1e3)
    res = {who: statistics.median(t) for who, t in times.items()} | {"steps": len(data)}
    if samples is not None:
        mflop = gemm_flops(widths, batch, len(data)) / 1e6  # MFLOP per epoch / ms = GFLOP/s
        res["peak"], res["tpeak"] = gemm_peak(dtype, 7), torch_peak(dtype)
        for who in ("ours", "hand"):
            res[f"gemm_{who}"] = 100 * mflop / res[who] / res["peak"]
    return res


def cell(value: float | None, target: bool | None = None) -> str:
    """A figure, with PASS/FAIL when it has a target."""
    verdict = "" if target is None else " PASS" if target else " FAIL"
    return "—" if value is None else f"{value:.2f}{verdict}"


def speed_table(
    emit: Callable[[str], None], cases: list, rounds: int, reps: int
) -> list[dict[str, float]]:
    emit(f"## One SGD epoch (median of {rounds} interleaved rounds, ms per epoch)\n")
    emit(
        f"| case | widths | B | dtype | steps | ours | hand | torch | sklearn | ours/hand ≤ "
        f"{HAND_MAX} | torch/ours ≥ {TORCH_MIN:g} (digits) | sklearn/ours | GEMM % ours / "
        f"hand ≥ {GEMM_MIN:g} (wide f64) |"
    )
    emit("|---" * 13 + "|")
    results = []
    for name, widths, batch, dtype, samples, lr in cases:
        r = run_case((name, widths, batch, dtype, samples, lr), rounds, 1 if samples else reps)
        results.append(r)
        sk, ours, torch_ratio = r.get("sklearn"), r["ours"], r["torch"] / r["ours"]
        gemm = (
            "—"
            if not samples
            else f"{r['gemm_ours']:.0f} / {r['gemm_hand']:.0f}"
            + ((" PASS" if r["gemm_ours"] >= GEMM_MIN else " FAIL") if dtype == "float64" else "")
        )
        emit(
            f"| {name} | {'-'.join(map(str, widths))} | {batch} | {dtype} | "
            f"{r['steps']:.0f}×{batch} | {ours:.2f} | {r['hand']:.2f} | {r['torch']:.2f} | "
            f"{cell(sk)} | {cell(ours / r['hand'], ours / r['hand'] <= HAND_MAX)} | "
            f"{cell(torch_ratio, None if samples else torch_ratio >= TORCH_MIN)} | "
            f"{cell(None if sk is None else sk / ours)} | {gemm} |"
        )
    emit(
        f"\nDigits: 1797 samples, last partial batch dropped; each digits figure is the mean of "
        f"{reps} epochs from the same start. Hand and torch matched ours after one float64 step "
        "(rtol 1e-9) in every case. sklearn: its own init; `partial_fit` includes its input "
        "checks and loss; float64 only (not timed for float32, as briefed). GEMM % = matmul "
        "FLOPs per epoch / best 1024³ np.matmul rate, same dtype: "
        + "; ".join(
            f"{c[3]} {r['peak']:.0f} GFLOP/s (torch.mm: {r['tpeak']:.0f})"
            for c, r in zip(cases, results)
            if "peak" in r
        )
        + ".\n"
    )
    return results


def like_ours(
    model: lbp.Model, X_tr: np.ndarray, Y_tr: np.ndarray, seed: int, epochs: int, B: int, lr: float
) -> tuple[Params, Params]:
    """Hand and torch from ours' init with ours' shuffles (last partial batch kept)."""
    hp, tp, hands = model.init_params(seed), leaves(model.init_params(seed)), {}
    rng, n, spec = np.random.default_rng(seed), len(X_tr), model.spec
    for _ in range(epochs):
        order = rng.permutation(n)
        Xs, Ys = X_tr[order], Y_tr[order]
        for i in range(0, n, B):
            X, Y = Xs[i : i + B], Ys[i : i + B]
            if len(X) not in hands:  # HandTrainer's buffers fix the batch size
                hands[len(X)] = HandTrainer(spec.widths, spec.activations, spec.loss, len(X))
            hands[len(X)].step(hp, X, Y, lr)
            torch_step(tp, torch.from_numpy(X), torch.from_numpy(Y.argmax(axis=1)), lr)
    t = [a.detach().numpy() for a in tp]
    return hp, list(zip(t[::2], t[1::2]))


def digits_accuracy(emit: Callable[[str], None], seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    """Test accuracy of 64-256-128-10 on digits after 30 epochs, B 32, lr 0.1, per trainer."""
    d, epochs, B, lr = load("digits"), 30, 32, 0.1
    model = lbp.compile(spec_of((64, 256, 128, 10)))
    acc: dict[str, list[float]] = {who: [] for who in TRAINERS}
    for s in seeds:
        res = lbp.train(model, d.X_train, d.Y_train, epochs=epochs, batch_size=B, lr=lr, seed=s)
        trained = (res.params, *like_ours(model, d.X_train, d.Y_train, s, epochs, B, lr))
        for who, p in zip(TRAINERS, trained):
            acc[who].append(lbp.evaluate(model, p, d.X_test, d.Y_test)["accuracy"])
        clf = MLPClassifier(
            (256, 128),
            activation="tanh",
            solver="sgd",
            momentum=0.0,
            nesterovs_momentum=False,
            alpha=0.0,
            learning_rate_init=lr,
            batch_size=B,
            shuffle=True,
            random_state=s,
            max_iter=epochs,
            n_iter_no_change=epochs,
        ).fit(d.X_train, d.Y_train.argmax(axis=1))
        assert clf.n_iter_ == epochs, clf.n_iter_
        acc["sklearn"].append(clf.score(d.X_test, d.Y_test.argmax(axis=1)))
    emit(
        f"## Digits accuracy: 64-256-128-10, tanh/tanh/softmax + CE, B {B}, lr {lr}, {epochs} "
        f"epochs; {d.describe()}\n"
    )
    emit("| trainer | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | target |")
    emit("|---" * (len(seeds) + 3) + "|")
    for who, a in acc.items():
        m = float(np.mean(a))
        target = f"≥ {100 * ACC_MIN:.1f}% {'PASS' if m >= ACC_MIN else 'FAIL'}"
        emit(
            f"| {who} | "
            + " | ".join(f"{100 * v:.2f}%" for v in a)
            + f" | {100 * m:.2f}% | {target if who == 'ours' else '—'} |"
        )
    emit(
        "\nHand and torch: ours' init and shuffles (`default_rng(seed).permutation` per epoch, "
        "last batch of 3 kept). sklearn: its own init, shuffle=True, random_state=seed, `fit` "
        f"with max_iter={epochs} and n_iter_no_change={epochs} (so exactly {epochs} epochs)."
    )


def plot(cases: list, results: list[dict[str, float]], path: str) -> None:
    """Grouped bars of ms per epoch by case and trainer, log y axis (Agg canvas, no pyplot)."""
    fig = Figure(figsize=(11, 5.5), layout="tight")
    ax, x = fig.subplots(), np.arange(len(cases))
    for i, who in enumerate(TRAINERS):
        bars = ax.bar(x + (i - 1.5) * 0.2, [r.get(who, np.nan) for r in results], 0.2, label=who)
        ax.bar_label(
            bars,
            fmt=lambda v: f"{v:.0f}" if v >= 100 else f"{v:.3g}",
            fontsize=7,
            rotation=90,
            padding=2,
        )
    ax.set_xticks(x, [f"{c[0]}\n{'-'.join(map(str, c[1]))}\nB {c[2]}, {c[3]}" for c in cases])
    ax.set(
        yscale="log",
        ylabel="ms per epoch (median, log scale)",
        title="One SGD epoch by case "
        "and trainer (digits: 1797 samples, wide: 8192; sklearn float64 only)",
    )
    ax.legend(ncols=4, loc="upper left")
    ax.margins(y=0.25)
    fig.savefig(path, dpi=120)


def context(emit: Callable[[str], None], threads: int) -> None:
    """CPU, library versions and every thread pool's BLAS, kernel and thread count."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(ln.split(":")[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    emit(
        f"- {platform.machine()} {cpu}, {os.cpu_count()} logical CPUs; python "
        f"{sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__} (MKL "
        f"{torch.backends.mkl.is_available()}, {torch.get_num_threads()} threads), scikit-learn "
        f"{sklearn.__version__}; {threads} thread(s) for every library"
    )
    for pool in threadpool_info():
        kernel = f", kernel {pool['architecture']}" if pool.get("architecture") else ""
        name = " ".join(str(v) for v in (pool["prefix"], pool.get("version")) if v)
        emit(
            f"- {pool['user_api']}: {name}{kernel}, "
            f"num_threads {pool['num_threads']}, {pool['filepath'].split('site-packages/')[-1]}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, no float64 wide case")
    parser.add_argument("--threads", type=int, default=1, help="threads for all (default 1)")
    parser.add_argument("--rounds", type=int, help="timed rounds per case (default 9)")
    parser.add_argument("--out", help="also write the printed Markdown to this file")
    parser.add_argument(
        "--plot",
        default=None,
        help="also write a bar plot of ms per epoch to this .png (the README's "
        "is benchmarks/compare.png); none by default",
    )
    args = parser.parse_args(argv)
    rounds, lines = args.rounds or (3 if args.quick else 9), []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    torch.set_num_threads(args.threads)
    cases = CASES[:-1] if args.quick else CASES
    try:
        with threadpool_limits(limits=args.threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            emit("# lagrange_bp vs HandTrainer, PyTorch eager and scikit-learn\n")
            context(emit, args.threads)
            emit("")
            results = speed_table(emit, cases, rounds, 5 if args.quick else 20)
            digits_accuracy(emit)
        if args.plot is not None:
            plot(cases, results, args.plot)
    except AssertionError as exc:
        emit(f"**FAILED:** {exc}")
        raise
    finally:
        if args.out is not None:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
