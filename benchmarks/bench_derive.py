"""Time ``derive``, ``verify(spec)`` and ``verify(model)`` against the speed targets, and
tabulate the growth of derive and verify with depth N and width n.

Run ``python3 benchmarks/bench_derive.py [--quick] [--out FILE.md]``. Every figure is wall
time from ``time.perf_counter`` around one call, after a warm-up derivation on a tiny net and
with SymPy's cache cleared before each call, so a repeat does not reuse the previous one's work.
``verify(spec)`` derives by itself (the concrete and the abstract-σ derivation), so its time is
"derive + verify". Target cases report the median of 3 repeats; growth-table cells are single
runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sympy as sp
from sympy.core.cache import clear_cache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run from anywhere
import lagrange_bp as lbp

REPEATS = 3
DEPTHS = (2, 4, 8, 16)
WIDTHS = (2, 4, 8, 16, 32, 64)
QUICK_DEPTHS = (2, 4, 8)
QUICK_WIDTHS = (2, 4)

# (name, spec, "derive" | "verify" | "verify(model)", target s)
Case = tuple[str, lbp.NetworkSpec, str, float | None]

SPEC_8 = lbp.NetworkSpec((8, 8, 8, 8, 3), "tanh", "mse")
SPEC_DEEP = lbp.NetworkSpec((2,) * 17, "tanh", "mse")
SPEC_SOFTMAX = lbp.NetworkSpec((8, 8, 8, 8, 3), ("tanh",) * 3 + ("softmax",), "cross_entropy")
SPEC_16 = lbp.NetworkSpec((16, 16, 16, 10), ("tanh", "tanh", "softmax"), "cross_entropy")
SPEC_32 = lbp.NetworkSpec((32, 32, 10), ("tanh", "softmax"), "cross_entropy")
SPEC_DIGITS = lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")
SPEC_WIDE = lbp.NetworkSpec((784, 1024, 1024, 10), ("tanh", "tanh", "softmax"), "cross_entropy")
CASES: list[Case] = [
    ("(a)", SPEC_8, "derive", 3.0),
    ("(b)", SPEC_8, "verify", 10.0),
    ("(c)", SPEC_DEEP, "verify", 10.0),
    ("(d)", SPEC_SOFTMAX, "derive", None),
    ("(d)", SPEC_SOFTMAX, "verify", None),
    ("(e)", SPEC_16, "verify", 5.0),
    ("(f)", SPEC_32, "verify", 10.0),
    ("(g)", SPEC_DIGITS, "verify", None),
    ("(h)", SPEC_DIGITS, "verify(model)", 10.0),
    ("(i)", SPEC_WIDE, "verify(model)", 120.0),
]


def time_derive(spec: lbp.NetworkSpec) -> float:
    """Wall seconds of one ``derive(spec)`` from a cleared SymPy cache."""
    clear_cache()
    start = time.perf_counter()
    lbp.derive(spec, max_weights=None)
    return time.perf_counter() - start


def time_verify(spec: lbp.NetworkSpec) -> tuple[float, lbp.Report]:
    """Wall seconds of one ``verify(spec)`` from a cleared SymPy cache, and its ok report."""
    clear_cache()
    start = time.perf_counter()
    report = lbp.verify(spec, max_weights=None)
    seconds = time.perf_counter() - start
    if not report.ok:
        failed = ", ".join(f"({s.label})" for s in report.steps if not s.ok) or "no steps"
        raise AssertionError(f"verify({spec.describe()}) returned ok=False; failed: {failed}")
    return seconds, report


def time_verify_model(spec: lbp.NetworkSpec) -> tuple[float, lbp.Report]:
    """Wall seconds of compile(spec) + verify(model): the generated kernels proven exactly."""
    clear_cache()
    start = time.perf_counter()
    report = lbp.verify(lbp.compile(spec))
    seconds = time.perf_counter() - start
    if not report.ok:
        raise AssertionError(f"verify(compile({spec.describe()})) returned ok=False")
    return seconds, report


def label(spec: lbp.NetworkSpec) -> str:
    """A short name: ``8-8-8-8-3, tanh, mse``; a long equal-width net as ``2-…-2 (N=16)``."""
    w = spec.widths
    widths = (
        f"{w[0]}-…-{w[0]} (N={spec.depth})"
        if len(w) > 6 and len(set(w)) == 1
        else ("-".join(map(str, w)))
    )
    acts = spec.activations[0] if len(set(spec.activations)) == 1 else "/".join(spec.activations)
    return f"{widths}, {acts}, {spec.loss}"


def machine_context() -> list[str]:
    """Markdown lines naming the date, interpreter, libraries and machine."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return [
        "# lagrange_bp derive/verify benchmark",
        "",
        f"- date: {now}",
        f"- python: {platform.python_version()} ({platform.python_implementation()})",
        f"- sympy: {sp.__version__}, numpy: {np.__version__}, lagrange_bp: {lbp.__version__}",
        f"- os.cpu_count(): {os.cpu_count()}",
        f"- platform: {platform.platform()} ({platform.machine()})",
        "",
    ]


def run_targets(emit: Callable[[str], None]) -> None:
    """Median of ``REPEATS`` wall times for each target case, with PASS/FAIL against its target."""
    emit(f"## Speed targets (median of {REPEATS} repeats, wall seconds)")
    emit("")
    emit("| case | network | call | runs (s) | median (s) | target (s) | result |")
    emit("|---|---|---|---|---|---|---|")
    notes: list[str] = []
    for name, spec, call, target in CASES:
        if call == "derive":
            runs = [time_derive(spec) for _ in range(REPEATS)]
        else:
            timer = time_verify if call == "verify" else time_verify_model
            timed = [timer(spec) for _ in range(REPEATS)]
            runs = [seconds for seconds, _ in timed]
            report = timed[-1][1]
            steps = ", ".join(f"({s.label}) {s.seconds:.2f}" for s in report.steps)
            notes.append(
                f"- {name} {call}, last run: ok={report.ok}, report.seconds "
                f"{report.seconds:.2f} = {report.preparation} "
                f"{report.derive_seconds:.2f} + steps {steps}"
            )
        median = statistics.median(runs)
        verdict = "—" if target is None else ("PASS" if median <= target else "FAIL")
        emit(
            f"| {name} | {label(spec)} | {call} | "
            f"{' / '.join(f'{t:.2f}' for t in runs)} | {median:.2f} | "
            f"{'—' if target is None else f'≤ {target:g}'} | {verdict} |"
        )
    emit("")
    for note in notes:
        emit(note)
    emit("")


def run_growth(
    emit: Callable[[str], None], depths: tuple[int, ...], widths: tuple[int, ...]
) -> None:
    """Markdown table of derive / verify wall seconds, rows depth N, columns width n."""
    emit("## Growth: derive s / derive + verify s (single run; tanh, mse, every width n)")
    emit("")
    emit("| N \\ n | " + " | ".join(f"n={n}" for n in widths) + " |")
    emit("|---" * (len(widths) + 1) + "|")
    for depth in depths:
        cells = []
        for n in widths:
            spec = lbp.NetworkSpec((n,) * (depth + 1), "tanh", "mse")
            derive_s = time_derive(spec)
            verify_s, _ = time_verify(spec)
            cells.append(f"{derive_s:.2f} / {verify_s:.2f}")
        emit(f"| N={depth} | " + " | ".join(cells) + " |")
    emit("")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"growth table for depths {QUICK_DEPTHS}, widths {QUICK_WIDTHS} only",
    )
    parser.add_argument("--out", type=Path, help="also write the printed Markdown to this file")
    args = parser.parse_args(argv)

    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        for line in machine_context():
            emit(line)
        warm = lbp.NetworkSpec((2, 2, 1), "tanh", "mse")
        time_verify(warm)  # imports, lazy SymPy modules, package caches
        run_targets(emit)
        depths, widths = (QUICK_DEPTHS, QUICK_WIDTHS) if args.quick else (DEPTHS, WIDTHS)
        run_growth(emit, depths, widths)
        emit("Every verify above returned ok=True.")
    except AssertionError as exc:
        emit(f"**FAILED:** {exc}")
        raise
    finally:
        if args.out is not None:
            args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
