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
from pathlib import Path
from typing import Any

import numpy as np

from .model import Params, check_memory
from .safe_io import open_npz, read_member, shown, writable
from .spec import NetworkSpec

FORMAT = "lagrange_bp-checkpoint-1"
MAX_META_BYTES = 1 << 20


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
    writable(path, "model file")
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
    """(spec, params, info) from a file written by ``save``; ``CheckpointError`` otherwise.

    Only the members the format defines are read (meta, sha256, W1.., b1..), each after its
    header is checked against the size its network gives it, and a network that cannot fit in
    memory is refused: a header claiming a huge shape, or a member that inflates a small file,
    is refused before anything is allocated.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {shown(str(path))} does not exist or is not a file")
    what = f"model file {shown(path.name)}"
    try:
        archive = open_npz(path, what)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        with archive as z:
            meta_text = str(read_member(z, "meta", what, MAX_META_BYTES)[()])
            meta = json.loads(meta_text)
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"format {shown(str(meta.get('format')))}, expected {FORMAT!r}")
            spec = NetworkSpec(meta["widths"], meta["activations"], meta["loss"])
            check_memory(spec, 1)  # its arrays may then take what its network needs
            params = []
            for k in range(1, spec.depth + 1):
                n_in, n_out = spec.widths[k - 1], spec.widths[k]
                W = read_member(z, f"W{k}", what, 8 * n_out * n_in)
                b = read_member(z, f"b{k}", what, 8 * n_out)
                params.append((W, b))
            digest = str(read_member(z, "sha256", what, 1024)[()])
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{what} is not a valid lagrange_bp checkpoint: {exc}") from None
    if not isinstance(meta.get("info", {}), dict):
        raise CheckpointError(f"{what} is not a valid lagrange_bp checkpoint")
    try:
        same = _digest(meta_text, params) == digest
    except (TypeError, ValueError):
        same = False
    if not same:
        raise CheckpointError(
            f"{what} was altered or corrupted: its checksum does not match its contents"
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
                f"{what} does not match its own network {spec.describe()}: "
                f"W^{k} {W.shape}, b^{k} {b.shape}"
            )
    return spec, params, meta.get("info", {})
