"""The process in which ``lagrange-bp check`` runs a candidate rule: ``python -m
lagrange_bp.check_worker REQUEST RESULT``.

The user's file is imported and called only here, never in the process that decides the exit
status: whatever the candidate does — ``sys.exit(0)``, ``os._exit(0)``, raising
``KeyboardInterrupt``, printing — the parent reads the verdict from RESULT, a JSON file this
worker writes only when the check itself finished. No file, no verdict: the parent reports
WRONG.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .rules import check_rule
from .safe_io import shown
from .spec import NetworkSpec


class CandidateError(Exception):
    """The candidate file or function cannot be used: reported as bad input (exit 2)."""


def load_candidate(ref: str) -> Callable[..., Any]:
    """Import FILE.py and return its attribute NAME, for ``--candidate FILE.py:NAME``."""
    path, sep, name = ref.rpartition(":")
    if not sep or not path or not name:
        raise CandidateError(f"--candidate must be FILE.py:FUNCTION, got {shown(ref)}")
    if not os.path.isfile(path):
        raise CandidateError(f"--candidate: file {shown(path)} does not exist")
    module_spec = importlib.util.spec_from_file_location("lagrange_bp_candidate", path)
    if module_spec is None or module_spec.loader is None:
        raise CandidateError(f"--candidate: cannot import {shown(path)} as Python")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report it on one line
        raise CandidateError(
            f"--candidate: importing {shown(path)} failed: {type(exc).__name__}: {shown(str(exc))}"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CandidateError(f"--candidate: {shown(path)} has no function {shown(name)}")
    return fn


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Check the candidate the request names; the outcome as JSON-ready data."""
    spec = NetworkSpec(request["widths"], request["activations"], request["loss"])
    try:
        candidate = load_candidate(request["candidate"])
        report = check_rule(spec, request["rule"], candidate, seed=request["seed"])
    except (CandidateError, ValueError) as exc:
        return {"error": str(exc)}
    return {"ok": report.ok, "text": str(report)}


def main(argv: list[str]) -> None:
    request, result = json.loads(Path(argv[0]).read_text(encoding="utf-8")), Path(argv[1])
    outcome = run(request)
    result.write_text(json.dumps(outcome), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
