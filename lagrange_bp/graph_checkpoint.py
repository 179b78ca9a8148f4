"""Model files for graphs: ``checkpoint.save`` and ``checkpoint.load`` dispatch here.

The same ``.npz`` container and guarantees as ``checkpoint`` (atomic write, no pickle, a
SHA-256 over the metadata and every array, each member's size checked before it is read); the
metadata stores the graph in its JSON format (``GraphSpec.to_json``), and the parameters are
members ``p0``, ``p1``, … in the order of ``spec.param_shapes()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np

from .graph import GraphSpec
from .graph_json import graph_from_json
from .graph_model import check_graph_memory
from .model import Params
from .safe_io import read_member

FORMAT = "lagrange_bp-graph-checkpoint-1"


def _groups(params: dict[str, np.ndarray]) -> Params:
    """The arrays as one-element groups, for the digest and the optimizer's slots."""
    return cast(Params, [(a,) for a in params.values()])


def graph_meta(
    spec: GraphSpec, params: dict[str, np.ndarray], info: dict[str, Any] | None,
    state: dict[str, Any] | None,
) -> tuple[str, dict[str, np.ndarray]]:  # fmt: skip
    """The metadata text and the parameter members of a graph's model file."""
    from .checkpoint import CheckpointError, state_meta

    shapes = spec.param_shapes()
    if not isinstance(params, dict) or set(params) != set(shapes):
        raise CheckpointError(f"refusing to save: params must be a dict with keys {list(shapes)}")
    for name, a in params.items():
        if np.shape(a) != shapes[name] or not np.isfinite(a).all():
            raise CheckpointError(f"refusing to save: {name} is misshapen or not finite")
    meta = json.dumps(
        {
            "format": FORMAT,
            "graph": spec.to_json(),
            "info": info or {},
            "state": state_meta(state),
        },
        sort_keys=True,
    )
    return meta, {f"p{i}": np.asarray(params[k]) for i, k in enumerate(shapes)}


def save_graph(
    path: str | Path, spec: GraphSpec, params: dict[str, np.ndarray],
    info: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Write a graph's parameters (and JSON-able ``info``, a training ``state``) atomically."""
    from .checkpoint import digest, slot_arrays, write_atomic

    meta, arrays = graph_meta(spec, params, info, state)
    ordered = {k: params[k] for k in spec.param_shapes()}
    slots = slot_arrays(state)
    arrays |= slots
    arrays["meta"] = np.array(meta)
    arrays["sha256"] = np.array(digest(meta, _groups(ordered), list(slots.values())))
    return write_atomic(Path(path), arrays)


def load_graph(
    z: Any, meta_text: str, meta: dict[str, Any], what: str
) -> tuple[GraphSpec, dict[str, np.ndarray], dict[str, Any]]:
    """(spec, params, info) of an open graph model file whose metadata is read."""
    from .checkpoint import CheckpointError, digest, read_slots, training_info

    spec = graph_from_json(meta["graph"])
    check_graph_memory(spec, 1)
    params = {}
    for i, (name, shape) in enumerate(spec.param_shapes().items()):
        a = read_member(z, f"p{i}", what, 8 * int(np.prod(shape)))
        if a.shape != shape or a.dtype.kind != "f" or not np.isfinite(a).all():
            raise CheckpointError(f"{what} does not match its own graph: {name} {a.shape}")
        params[name] = a
    slots = read_slots(z, meta.get("state"), _groups(params), what)
    stored = str(read_member(z, "sha256", what, 1024)[()])
    if digest(meta_text, _groups(params), [a for _, a in slots]) != stored:
        raise CheckpointError(
            f"{what} was altered or corrupted: its checksum does not match its contents"
        )
    if not isinstance(meta.get("info", {}), dict):
        raise CheckpointError(f"{what} is not a valid lagrange_bp checkpoint")
    return spec, params, training_info(meta, slots)
