"""Time one SGD epoch of ``Model.sgd_step`` against ``HandTrainer``, plus compile and proof times.

Run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/bench_train.py
[--quick] [--threads T] [--rounds R] [--out FILE.md]``. Both trainers get copies of the same
initial (W, b), the same pre-sliced contiguous batches (the last partial batch is dropped) and
the same BLAS thread count; after one epoch their weights must agree. Then, per round, each
trainer's epoch is timed back to back, alternating which goes first; figures are medians.
What users call (the checked ``sgd_step``, ``lbp.train``) is timed in groups of calls, each
starting cold after 0.2 s of other work, with one untimed call (``run_user_case``).
``compile`` and ``verify_general`` are timed in fresh subprocesses, so their caches are cold.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, run from anywhere
from hand_trainer import HandTrainer  # noqa: E402

import lagrange_bp as lbp  # noqa: E402

Params = list[tuple[np.ndarray, np.ndarray]]
Batches = list[tuple[np.ndarray, np.ndarray]]
RATIO_TARGET, STEP_TARGET, COMPILE_TARGET, PROOF_TARGET = 1.05, 1.10, 1.0, 5.0
TRAIN_EPOCHS = 10  # the longer lbp.train call (digits), timed per epoch
FLUSH_BYTES, FLUSH_SECONDS = 64 << 20, 0.2  # read before each group of the user case
WIDE = (784, 1024, 1024, 10)
# (name, widths, activations, batch, dtype, samples or None for sklearn digits, lr)
CASES = [
    ("(a) digits", (64, 128, 10), ("tanh", "softmax"), 32, "float64", None, 0.1),
    ("(b) wide f32", WIDE, ("tanh", "tanh", "softmax"), 256, "float32", 8192, 0.01),
    ("(c) wide f64", WIDE, ("tanh", "tanh", "softmax"), 256, "float64", 8192, 0.01),
]
COMPILE_CODE = """import time
t0 = time.perf_counter(); import lagrange_bp as lbp; t1 = time.perf_counter()
lbp.compile(lbp.NetworkSpec((16,) * 11, "tanh", "mse")); print(time.perf_counter() - t1, t1 - t0)
"""
PROOF_CODE = """import time
from lagrange_bp.verify_general import verify_general
t0 = time.perf_counter(); ok = verify_general().ok; s = time.perf_counter() - t0
assert ok, "verify_general() returned ok=False"; print(s)
"""


def batches(widths: tuple[int, ...], batch: int, dtype: str, samples: int | None) -> Batches:
    """Contiguous (X_b, Y_b) of ``batch`` rows each; Y one-hot. Digits are scaled by 1/16."""
    if samples is None:
        from sklearn.datasets import load_digits

        X, labels = load_digits(return_X_y=True)
        X = X / 16.0
    else:
        rng = np.random.default_rng(0)
        X, labels = rng.standard_normal((samples, widths[0])), rng.integers(0, widths[-1], samples)
    Y = np.eye(widths[-1])[labels]
    c = np.ascontiguousarray
    return [
        (c(X[i : i + batch], dtype), c(Y[i : i + batch], dtype))
        for i in range(0, len(X) - batch + 1, batch)
    ]


def epoch(
    step: Callable[[Params, np.ndarray, np.ndarray, float], None],
    params: Params,
    data: Batches,
    lr: float,
) -> float:
    """Wall seconds of one pass of ``step`` over every batch."""
    start = time.perf_counter()
    for X, Y in data:
        step(params, X, Y, lr)
    return time.perf_counter() - start


def copy(params: Params) -> Params:
    return [(W.copy(), b.copy()) for W, b in params]


def gemm_flops(widths: tuple[int, ...], batch: int, steps: int) -> float:
    """Matmul FLOPs of an epoch: per layer z = x Wᵀ and ∂W = δᵀ x, plus δ W for k ≥ 2."""
    layers = enumerate(itertools.pairwise(widths))
    return steps * sum(2.0 * batch * m * n * (2 if k == 0 else 3) for k, (m, n) in layers)


def gemm_peak(dtype: str, reps: int) -> float:
    """Best GFLOP/s of ``np.matmul`` on 1024×1024 @ 1024×1024 with a preallocated output."""
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal((1024, 1024)).astype(dtype) for _ in range(3))
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best / 1e9


def run_case(emit: Callable[[str], None], case: tuple, rounds: int, reps: int) -> list[str]:
    """Check agreement, time the interleaved rounds, emit one table row; return GEMM notes."""
    name, widths, acts, batch, dtype, samples, lr = case
    spec = lbp.NetworkSpec(widths, acts, "cross_entropy")
    model, data = lbp.compile(spec, dtype=dtype), batches(widths, batch, dtype, samples)
    hand = HandTrainer(spec.widths, spec.activations, spec.loss, batch=batch, dtype=dtype)
    steps = {"ours": functools.partial(model.sgd_step, check=False), "hand": hand.step}
    p0 = model.init_params(seed=0)
    after = {who: copy(p0) for who in steps}
    for who, step in steps.items():  # also the warm-up
        epoch(step, after[who], data, lr)
    rtol = 1e-6 if dtype == "float64" else 1e-3
    for k, (po, ph) in enumerate(zip(after["ours"], after["hand"]), start=1):
        for what, o, h in (("W", po[0], ph[0]), ("b", po[1], ph[1])):
            if not np.allclose(o, h, rtol=rtol, atol=rtol * float(np.abs(h).max())):
                raise AssertionError(
                    f"{name}: {what}^{k} differs after one epoch; max |ours − "
                    f"hand| = {np.abs(o - h).max():.3g}, max |hand| = "
                    f"{np.abs(h).max():.3g}"
                )
    times: dict[str, list[float]] = {"ours": [], "hand": []}
    for r in range(rounds):
        for who in ("ours", "hand") if r % 2 == 0 else ("hand", "ours"):
            params = copy(p0)
            times[who].append(sum(epoch(steps[who], params, data, lr) for _ in range(reps)) / reps)
    ours, hand_s = statistics.median(times["ours"]), statistics.median(times["hand"])
    ratio = ours / hand_s
    per_round = sorted(o / h for o, h in zip(times["ours"], times["hand"]))
    verdict = "PASS" if ratio <= RATIO_TARGET else "FAIL"
    emit(
        f"| {name} | {'-'.join(map(str, widths))} | {batch} | {dtype} | {len(data)}×{batch} | "
        f"{ours * 1e3:.2f} | {hand_s * 1e3:.2f} | {ratio:.3f} | "
        f"{per_round[0]:.2f}–{per_round[-1]:.2f} | ≤ {RATIO_TARGET} | {verdict} |"
    )
    if samples is None:
        return []
    flops, peak = gemm_flops(widths, batch, len(data)), gemm_peak(dtype, 2 * reps + 3)
    return [
        f"- {name}: {flops / 1e9:.1f} GFLOP of matmul per epoch; {dtype} peak "
        f"{peak:.1f} GFLOP/s; ours {flops / ours / 1e9:.1f} GFLOP/s "
        f"({100 * flops / ours / 1e9 / peak:.0f}% of peak), hand "
        f"{flops / hand_s / 1e9:.1f} GFLOP/s ({100 * flops / hand_s / 1e9 / peak:.0f}%)"
    ]


def run_user_case(
    emit: Callable[[str], None], case: tuple, rounds: int, reps: int, notes: list[str]
) -> None:
    """What users call, against the hand-written epoch: the public ``model.sgd_step`` (checks
    on) over the same batches, and ``lbp.train(epochs=1)`` with its defaults (shuffling, the
    batch-loss history) on the same rows, in the same memory (the batches are views of the X
    and Y that ``train`` gets); one table row."""
    name, widths, acts, batch, dtype, samples, lr = case
    spec = lbp.NetworkSpec(widths, acts, "cross_entropy")
    model, data = lbp.compile(spec, dtype=dtype), batches(widths, batch, dtype, samples)
    X, Y = np.concatenate([x for x, _ in data]), np.concatenate([y for _, y in data])
    data = [(X[i : i + batch], Y[i : i + batch]) for i in range(0, len(X), batch)]
    hand = HandTrainer(spec.widths, spec.activations, spec.loss, batch=batch, dtype=dtype)
    p0 = model.init_params(seed=0)

    def train_epoch(params: Params) -> float:
        start = time.perf_counter()
        lbp.train(model, X, Y, epochs=1, batch_size=batch, lr=lr, params=params)
        return time.perf_counter() - start

    def train_per_epoch(params: Params) -> float:
        start = time.perf_counter()
        lbp.train(model, X, Y, epochs=TRAIN_EPOCHS, batch_size=batch, lr=lr, params=params)
        return (time.perf_counter() - start) / TRAIN_EPOCHS

    runs: dict[str, Callable[[Params], float]] = {
        "hand": lambda params: epoch(hand.step, params, data, lr),
        "sgd_step": lambda params: epoch(model.sgd_step, params, data, lr),
        "train": train_epoch,
    }
    if samples is None:  # digits: also a longer call, whose per-call setup is spread
        runs["train_long"] = train_per_epoch
    for run in runs.values():  # warm-up
        run(copy(p0))
    times: dict[str, list[float]] = {who: [] for who in runs}  # the timed calls' mean
    cold: dict[str, list[float]] = {who: [] for who in runs}  # each group's first call
    # Each group starts cold: after FLUSH_SECONDS of reading other memory (on this VM,
    # memory left alone for ~0.1 s is many times slower to touch again; see NOTES.md), with
    # one untimed call that brings its code and data back, then `reps` timed epochs (the
    # 10-epoch call fewer times); the order is rotated each round.
    calls_of = {who: reps for who in runs} | {"train_long": max(1, reps // TRAIN_EPOCHS)}
    order, junk = list(runs), np.ones(FLUSH_BYTES // 8)
    for r in range(rounds):
        for who in order[r % len(order) :] + order[: r % len(order)]:
            end = time.perf_counter() + FLUSH_SECONDS
            while time.perf_counter() < end:
                np.add.reduce(junk)
            params, n = copy(p0), calls_of[who]
            cold[who].append(runs[who](params))
            times[who].append(sum(runs[who](params) for _ in range(n)) / n)
    med = {who: statistics.median(t) for who, t in times.items()}
    step_ratio, train_ratio = med["sgd_step"] / med["hand"], med["train"] / med["hand"]
    emit(
        f"| {name} | {batch} | {dtype} | {med['hand'] * 1e3:.2f} | {med['sgd_step'] * 1e3:.2f} | "
        f"{step_ratio:.3f} (≤ {STEP_TARGET}: {'PASS' if step_ratio <= STEP_TARGET else 'FAIL'}) | "
        f"{med['train'] * 1e3:.2f} | {train_ratio:.3f} "
        f"(≤ {RATIO_TARGET}: {'PASS' if train_ratio <= RATIO_TARGET else 'FAIL'}) |"
    )
    first = {who: statistics.median(t) for who, t in cold.items()}
    counted = {  # the ratios with each group's cold call counted as one of its calls
        who: statistics.median(
            (c + reps * t) / (reps + 1) / ((ch + reps * th) / (reps + 1))
            for c, t, ch, th in zip(cold[who], times[who], cold["hand"], times["hand"])
        )
        for who in ("sgd_step", "train")
    }
    notes.append(
        f"{name}: each group's untimed first call, cold, took {first['hand'] * 1e3:.2f} ms for "
        f"the hand-written epoch, {first['sgd_step'] * 1e3:.2f} ms for the checked `sgd_step` "
        f"epoch and {first['train'] * 1e3:.2f} ms for `lbp.train(epochs=1)` (median over "
        f"rounds). Counted as one of the group's {reps + 1} calls, the ratios would be "
        f"{counted['sgd_step']:.3f} and {counted['train']:.3f}."
    )
    if "train_long" in med:
        notes.append(
            f"{name}: `lbp.train(epochs={TRAIN_EPOCHS})` takes {med['train_long'] * 1e3:.2f} ms "
            f"per epoch, {med['train_long'] / med['hand']:.3f}× the hand-written epoch: "
            f"`epochs=1` also pays the call's setup (the checks of the arguments and the "
            f"parameters, their copy, the shuffling generator), "
            f"{(med['train'] - med['train_long']) * 1e3:.2f} ms."
        )


def fresh(code: str, repeats: int) -> list[list[float]]:
    """The floats printed by ``code`` in ``repeats`` fresh interpreters started in the repo root."""
    out = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"subprocess failed:\n{done.stderr}")
        out.append([float(v) for v in done.stdout.split()])
    return out


def run_cold(emit: Callable[[str], None], repeats: int) -> None:
    """Median seconds of compile (10 layers) and of verify_general, each in a fresh process."""
    comp, proof = fresh(COMPILE_CODE, repeats), fresh(PROOF_CODE, repeats)
    c, imp = statistics.median(r[0] for r in comp), statistics.median(r[1] for r in comp)
    p = statistics.median(r[0] for r in proof)
    emit(f"## Cold-process times (median of {repeats} fresh interpreters, wall seconds)")
    emit("")
    emit("| call | runs (s) | median (s) | target (s) | result |")
    emit("|---|---|---|---|---|")
    for what, runs, med, target in (
        ("lbp.compile, (16,)*11, tanh, mse", [r[0] for r in comp], c, COMPILE_TARGET),
        (
            "verify_general() (generic derivation + general proof)",
            [r[0] for r in proof],
            p,
            PROOF_TARGET,
        ),
    ):
        emit(
            f"| {what} | {' / '.join(f'{t:.2f}' for t in runs)} | {med:.2f} | ≤ {target:g} | "
            f"{'PASS' if med <= target else 'FAIL'} |"
        )
    emit("")
    emit(f"`import lagrange_bp` before compile (not counted): median {imp:.2f} s.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1 cold repeat")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--rounds", type=int, help="timed rounds per case (default 9)")
    parser.add_argument("--out", type=Path, help="also write the printed Markdown to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        with threadpool_limits(limits=args.threads):
            emit("# lagrange_bp training benchmark: generated sgd_step vs HandTrainer")
            emit("")
            emit(
                f"- numpy {np.__version__}, python {sys.version.split()[0]}, threads {args.threads}"
            )
            for pool in threadpool_info():
                emit(
                    f"- {pool['user_api']}: {pool['internal_api']} {pool.get('version')}, "
                    f"kernel {pool.get('architecture')}, num_threads {pool['num_threads']}"
                )
            emit("")
            emit(f"## One SGD epoch (median of {rounds} interleaved rounds, ms per epoch)")
            emit("")
            emit(
                "| case | widths | B | dtype | steps | ours (ms) | hand (ms) | ours/hand "
                "| per-round ratios | target | result |"
            )
            emit("|---|---|---|---|---|---|---|---|---|---|---|")
            notes = [
                n
                for case in CASES
                for n in run_case(emit, case, rounds, 20 if case[5] is None else 1)
            ]
            emit("")
            emit(
                "Digits: all 1797 samples, 56 batches of 32 (last 5 samples dropped); each "
                "digits timing is the mean of 20 epochs. Both trainers' weights agreed after "
                "one epoch in every case."
            )
            emit("")
            emit(f"## What users call (median of {rounds} interleaved rounds, ms per epoch)")
            emit("")
            emit(
                "| case | B | dtype | hand (ms) | `model.sgd_step`, checked (ms) | ratio "
                "| `lbp.train(epochs=1)` (ms) | ratio |"
            )
            emit("|---|---|---|---|---|---|---|---|")
            train_notes: list[str] = []
            for case in CASES:
                run_user_case(emit, case, rounds, 20 if case[5] is None else 2, train_notes)
            emit("")
            for note in train_notes:
                emit(note)
                emit("")
            emit(
                "`lbp.train` shuffles the rows (its default) and records the epoch's mean batch "
                "loss; the hand-written epoch neither shuffles nor computes a loss. All three "
                "read the same X and Y (the batches are views of them). Each group of calls "
                f"starts cold, after {FLUSH_SECONDS:g} s spent reading other memory, with one "
                "untimed call, then 20 timed epochs (digits; the 10-epoch call twice) or 2 "
                "(wide); the order of the groups is rotated each round (see NOTES.md)."
            )
            emit("")
            emit("## GEMM share (1024³ matmul peak, same dtype and threads)")
            emit("")
            for note in notes:
                emit(note)
            emit("")
        run_cold(emit, 1 if args.quick else 3)
    except AssertionError as exc:
        emit(f"**FAILED:** {exc}")
        raise
    finally:
        if args.out is not None:
            args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
