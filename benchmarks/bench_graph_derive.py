"""Time the exact derivation and proof of recurrent networks: a hidden-size × steps table.

Run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_graph_derive.py
[--limit S]``. Each cell is ``lbp.recurrent(inputs=2, hidden=h, outputs=1, steps=T)`` (tanh
cell, identity output at the last step, mse), timed as ``lbp.derive(spec)`` and as
``lbp.verify(spec)`` (which derives by itself, the concrete and the abstract-σ derivation, so
its time is "derive + verify"), wall time from ``time.perf_counter`` around one call, after a
warm-up on a tiny network and with SymPy's cache cleared before each call. Single runs. Along
a row T grows; once a cell's derive + verify passes ``--limit`` seconds (default 60), the
row's longer sequences are skipped and printed as "skipped". Target: hidden 4, T = 8,
derive + verify ≤ 10 s. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sympy.core.cache import clear_cache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run from anywhere
import lagrange_bp as lbp

HIDDEN = (2, 4, 8)
STEPS = (2, 4, 8, 16)
TARGET = (4, 8, 10.0)  # hidden, T, seconds of derive + verify


def spec(hidden: int, steps: int) -> lbp.GraphSpec:
    return lbp.recurrent(inputs=2, hidden=hidden, outputs=1, steps=steps)


def time_derive(s: lbp.GraphSpec) -> float:
    """Wall seconds of one ``derive(s)`` from a cleared SymPy cache."""
    clear_cache()
    start = time.perf_counter()
    lbp.derive(s, max_weights=None)
    return time.perf_counter() - start


def time_verify(s: lbp.GraphSpec) -> float:
    """Wall seconds of one ``verify(s)`` (derive + verify) from a cleared SymPy cache."""
    clear_cache()
    start = time.perf_counter()
    report = lbp.verify(s, max_weights=None)
    seconds = time.perf_counter() - start
    if not report.ok:
        raise AssertionError(f"verify({s.describe()}) returned ok=False")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=60.0, help="skip a row's longer T after "
                        "a cell above this many seconds (default 60)")  # fmt: skip
    args = parser.parse_args(argv)
    lbp.verify(spec(1, 2))  # warm-up: imports, records, caches of the activation checks
    cells: dict[tuple[int, int], str] = {}
    target = None
    for h in HIDDEN:
        over = False
        for T in STEPS:
            if over:
                cells[h, T] = "skipped"
                continue
            derive, verify = time_derive(spec(h, T)), time_verify(spec(h, T))
            cells[h, T] = f"{derive:.2f} / {verify:.2f}"
            print(f"hidden {h}, T = {T}: derive {derive:.2f} s, derive + verify {verify:.2f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            if (h, T) == TARGET[:2]:
                target = verify
            over = verify > args.limit
    print("derive / derive + verify (s), recurrent(inputs=2, hidden=h, outputs=1, steps=T), "
          "tanh, mse, single runs\n")  # fmt: skip
    print("| hidden \\ T | " + " | ".join(f"T = {T}" for T in STEPS) + " |")
    print("|---|" + "---|" * len(STEPS))
    for h in HIDDEN:
        print(f"| {h} | " + " | ".join(cells[h, T] for T in STEPS) + " |")
    if any(c == "skipped" for c in cells.values()):
        print(f"\nskipped: a shorter sequence of that hidden size took over {args.limit:g} s")
    if target is not None:
        h, T, limit = TARGET
        verdict = "met" if target <= limit else "MISSED"
        print(f"\ntarget: hidden {h}, T = {T}, derive + verify {target:.2f} s ≤ {limit:g} s: "
              f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
