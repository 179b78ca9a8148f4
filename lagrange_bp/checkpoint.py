"""Save and load trained parameters as ``.npz``, with the spec stored as JSON metadata.

Written atomically (a temporary file in the same folder, then ``os.replace``), read with
``allow_pickle=False``, and protected by a SHA-256 of the spec and every array, so a truncated,
altered or mismatched file gives a ``CheckpointError`` — never a crash or a wrong model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .model import Params
from .spec import NetworkSpec

FORMAT = "lagrange_bp-checkpoint-1"


class CheckpointError(ValueError):
    """A model file that cannot be used: missing, truncated, altered, or for another network."""


def _digest(meta: str, params: Params) -> str:
    h = hashlib.sha256(meta.encode())
    for W, b in params:
        for a in (W, b):
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save(
    path: str | Path, spec: NetworkSpec, params: Params, info: dict[str, Any] | None = None
) -> Path:
    """Write ``params`` of ``spec`` (and JSON-able ``info``) to ``path`` atomically."""
    for k, (W, b) in enumerate(params, start=1):
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise CheckpointError(f"refusing to save: W^{k} or b^{k} contains NaN or inf")
    path = Path(path)
    meta = json.dumps(
        {
            "format": FORMAT,
            "widths": list(spec.widths),
            "activations": list(spec.activations),
            "loss": spec.loss,
            "info": info or {},
        },
        sort_keys=True,
    )
    arrays = {f"W{k}": W for k, (W, _) in enumerate(params, start=1)}
    arrays |= {f"b{k}": b for k, (_, b) in enumerate(params, start=1)}
    arrays["meta"] = np.array(meta)
    arrays["sha256"] = np.array(_digest(meta, params))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path) -> tuple[NetworkSpec, Params, dict[str, Any]]:
    """(spec, params, info) from a file written by ``save``; ``CheckpointError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
            files = {name: np.asarray(z[name]) for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise CheckpointError(
            f"model file {path.name!r} is truncated or not a lagrange_bp checkpoint: {exc}"
        ) from None
    try:
        meta_text = str(files["meta"][()])
        meta = json.loads(meta_text)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        spec = NetworkSpec(meta["widths"], meta["activations"], meta["loss"])
        params = [(files[f"W{k}"], files[f"b{k}"]) for k in range(1, spec.depth + 1)]
        digest = str(files["sha256"][()])
    except (KeyError, ValueError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"model file {path.name!r} is not a valid lagrange_bp checkpoint: {exc}"
        ) from None
    if not isinstance(meta.get("info", {}), dict):
        raise CheckpointError(f"model file {path.name!r} is not a valid lagrange_bp checkpoint")
    try:
        same = _digest(meta_text, params) == digest
    except (TypeError, ValueError):
        same = False
    if not same:
        raise CheckpointError(
            f"model file {path.name!r} was altered or corrupted: its checksum "
            f"does not match its contents"
        )
    for k, (W, b) in enumerate(params, start=1):
        shapes = ((spec.widths[k], spec.widths[k - 1]), (spec.widths[k],))
        finite = (
            W.dtype.kind == "f"
            and b.dtype.kind == "f"
            and np.isfinite(W).all()
            and np.isfinite(b).all()
        )
        if W.shape != shapes[0] or b.shape != shapes[1] or not finite:
            raise CheckpointError(
                f"model file {path.name!r} does not match its own network {spec.describe()}: "
                f"W^{k} {W.shape}, b^{k} {b.shape}"
            )
    return spec, params, meta.get("info", {})
