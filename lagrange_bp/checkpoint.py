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

from .graph import GraphSpec
from .graph_checkpoint import FORMAT as GRAPH_FORMAT
from .graph_checkpoint import load_graph
from .model import Params, check_memory
from .safe_io import open_npz, read_member, shown, writable
from .spec import NetworkSpec

FORMAT = "lagrange_bp-checkpoint-1"
MAX_META_BYTES = 1 << 20


class CheckpointError(ValueError):
    """A model file that cannot be used: missing, truncated, altered, or for another network."""


def digest(meta: str, params: Params, extra: list[np.ndarray] | None = None) -> str:
    h = hashlib.sha256(meta.encode())
    for a in [a for pair in params for a in pair] + list(extra or []):
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def slot_arrays(state: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """The optimizer's slot arrays of a training ``state`` as named members, in a fixed order."""
    if not state:
        return {}
    slots = state["optimizer"].get("slots", {})
    return {f"opt_{k}_{i}": a for k in sorted(slots) for i, a in enumerate(slots[k])}


def save(
    path: str | Path,
    spec: NetworkSpec | GraphSpec,
    params: Params | dict[str, np.ndarray],
    info: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write ``params`` of ``spec`` (and JSON-able ``info``) to ``path`` atomically; with a
    training ``state`` (``TrainResult.state``) also what ``train --resume`` needs to go on.
    A ``GraphSpec`` (params a dict) is stored with its JSON (``graph_checkpoint``)."""
    if isinstance(spec, GraphSpec):
        from .graph_checkpoint import save_graph

        writable(Path(path), "model file")
        return save_graph(path, spec, params, info, state)  # type: ignore[arg-type]
    assert not isinstance(params, dict), "params of a NetworkSpec are a list of (W, b)"
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
            "weight_decay": spec.weight_decay,
            "info": info or {},
            "state": state_meta(state),
        },
        sort_keys=True,
    )
    slots = slot_arrays(state)
    arrays = {f"W{k}": W for k, (W, _) in enumerate(params, start=1)}
    arrays |= {f"b{k}": b for k, (_, b) in enumerate(params, start=1)}
    arrays |= slots
    arrays["meta"] = np.array(meta)
    arrays["sha256"] = np.array(digest(meta, params, list(slots.values())))
    return write_atomic(path, arrays)


def write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` into a temporary file in the same folder, then renamed onto ``path``."""
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


def load(path: str | Path) -> tuple[NetworkSpec | GraphSpec, Any, dict[str, Any]]:
    """(spec, params, info) from a file written by ``save``; ``CheckpointError`` otherwise.
    A graph's file gives its ``GraphSpec`` and params as a dict (``graph_checkpoint``).

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
            if isinstance(meta, dict) and meta.get("format") == GRAPH_FORMAT:
                return load_graph(z, meta_text, meta, what)
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"format {shown(str(meta.get('format')))}, expected {FORMAT!r}")
            spec = NetworkSpec(
                meta["widths"], meta["activations"], meta["loss"], meta.get("weight_decay", 0.0)
            )
            check_memory(spec, 1)  # its arrays may then take what its network needs
            params = []
            for k in range(1, spec.depth + 1):
                n_in, n_out = spec.widths[k - 1], spec.widths[k]
                W = read_member(z, f"W{k}", what, 8 * n_out * n_in)
                b = read_member(z, f"b{k}", what, 8 * n_out)
                params.append((W, b))
            slots = read_slots(z, meta.get("state"), params, what)
            stored = str(read_member(z, "sha256", what, 1024)[()])
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{what} is not a valid lagrange_bp checkpoint: {exc}") from None
    if not isinstance(meta.get("info", {}), dict):
        raise CheckpointError(f"{what} is not a valid lagrange_bp checkpoint")
    try:
        same = digest(meta_text, params, [a for _, a in slots]) == stored
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
    return spec, params, training_info(meta, slots)


def training_info(meta: dict[str, Any], slots: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """The file's ``info``, with the training state (optimizer slots put back) if it has one."""
    info = dict(meta.get("info", {}))
    if meta.get("state"):
        state = dict(meta["state"])
        optimizer = dict(state["optimizer"])
        optimizer["slots"] = {}
        for name, a in slots:
            optimizer["slots"].setdefault(name.split("_")[1], []).append(a)
        state["optimizer"] = optimizer
        info["training_state"] = state
    return info


def state_meta(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON part of a training state: epoch, generator state, optimizer settings."""
    if not state:
        return None
    optimizer = {k: v for k, v in state["optimizer"].items() if k != "slots"}
    optimizer["slot_names"] = sorted(state["optimizer"].get("slots", {}))
    return {"epoch": state["epoch"], "rng": state["rng"], "optimizer": optimizer}


def read_slots(
    z: Any, state: dict[str, Any] | None, params: Params, what: str
) -> list[tuple[str, np.ndarray]]:
    """The optimizer's slot arrays a state names: one per W^k, b^k, each of its shape."""
    if not state:
        return []
    shapes = [a.shape for pair in params for a in pair]
    out = []
    for name in state["optimizer"].get("slot_names", []):
        if name not in ("velocity", "m", "s"):
            raise ValueError(f"unknown optimizer slot {name!r}")
        for i, shape in enumerate(shapes):
            a = read_member(z, f"opt_{name}_{i}", what, 8 * int(np.prod(shape)))
            if a.shape != shape or a.dtype.kind != "f":
                raise ValueError(f"optimizer slot {name} {i} has shape {a.shape}, not {shape}")
            out.append((f"opt_{name}_{i}", a))
    return out
