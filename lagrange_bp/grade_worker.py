"""The process in which a student's rules run: ``python -I grade_worker.py REQUEST_DIR``.

It is started by ``grading`` as a script (not as part of the package: ``-I`` keeps the package,
the working directory and the environment's paths out of ``sys.path``) and imports only NumPy.
It loads the submission file, calls the named function on the inputs in ``arrays.npz`` as
``request.json`` lists them, and writes what came back to ``results.npz`` (and each failure's
message to ``errors.json``). It decides nothing: the expected values do not exist anywhere while
it runs, and the parent compares the arrays it returns. Whatever the submission does to this
process — exit, loop, print, patch NumPy — it can only change the arrays, never a verdict.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _function(source: str) -> Any:
    namespace: dict[str, Any] = {"np": np, "math": __import__("math")}
    if "scipy." in source:
        namespace["scipy"] = __import__("scipy.special")
    exec(compile(source, "<lagrange_bp σ>", "exec"), namespace)
    return namespace["numpy_function"]


def main(folder: Path) -> None:
    request = json.loads((folder / "request.json").read_text(encoding="utf-8"))
    with np.load(folder / "arrays.npz", allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    functions = {name: _function(src) for name, src in request["functions"].items()}
    spec = importlib.util.spec_from_file_location("submission", request["submission"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    results: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the student's file cannot be imported: the parent says so
        (folder / "load_error.txt").write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        return
    fn = getattr(module, request["function"], None)
    if not callable(fn):
        (folder / "load_error.txt").write_text("missing", encoding="utf-8")
        return
    for i, call in enumerate(request["calls"]):
        kwargs: dict[str, Any] = {}
        for name, ref in call.items():
            kind, value = ref
            kwargs[name] = (
                arrays[value].copy()
                if kind == "array"
                else functions[value]
                if kind == "function"
                else value
            )
        try:
            got = np.asarray(fn(**kwargs))
            if got.dtype.kind not in "biuf":
                raise TypeError(f"it returned values of dtype {got.dtype}, not real numbers")
            results[f"r{i}"] = got.astype(np.float64)
        except BaseException as exc:
            errors[str(i)] = f"{type(exc).__name__}: {exc}"[:500]
    np.savez(folder / "results.npz", **results)  # type: ignore[arg-type]
    (folder / "errors.json").write_text(json.dumps(errors), encoding="utf-8")
    (folder / "done").write_text("", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
