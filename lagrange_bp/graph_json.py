"""A graph's JSON file format: written by ``GraphSpec.to_json``, read by ``graph_from_json``.

An object with exactly these keys::

    {"format": "lagrange_bp.graph", "version": 1,
     "inputs": [{"name": "x0", "width": 4}],
     "nodes": [{"name": "h1", "op": "layer", "inputs": ["x0"], "width": 8,
                "activation": "tanh", "params": "h1"},
               {"name": "s", "op": "add", "inputs": ["h1", "h2"]},
               {"name": "h0", "op": "zeros", "width": 8}],
     "outputs": ["out"], "loss": "cross_entropy"}

and optionally ``"weight_decay": α`` (a number ≥ 0; written when α ≠ 0).

``params`` names the layer's parameter set; a later layer with the same ``params`` shares it.
Nodes may read only inputs and earlier nodes. Unknown or missing keys, wrong types and
duplicate keys are refused; the text is parsed by ``json.loads`` only, never evaluated, and
the graph is rebuilt through ``Graph``, so every check of ``graph`` applies to it too.
"""

from __future__ import annotations

import json
from typing import Any

from .graph import GraphSpec, NodeSpec
from .spec import shown_name

FORMAT = "lagrange_bp.graph"
MAX_JSON_CHARS = 1_000_000

_KEYS = {
    "top": {"format", "version", "inputs", "nodes", "outputs", "loss"},
    "input": {"name", "width"},
    "layer": {"name", "op", "inputs", "width", "activation", "params"},
    "add": {"name", "op", "inputs"},
    "zeros": {"name", "op", "width"},
}


def to_json(spec: GraphSpec) -> str:
    """The graph in the JSON format of the module docstring."""
    doc = {
        "format": FORMAT,
        "version": 1,
        "inputs": [{"name": n.name, "width": n.width} for n in spec.nodes if n.op == "input"],
        "nodes": [_node_json(n) for n in spec.nodes if n.op != "input"],
        "outputs": list(spec.outputs),
        "loss": spec.loss,
    }
    if spec.weight_decay:
        doc["weight_decay"] = spec.weight_decay
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _node_json(n: NodeSpec) -> dict[str, object]:
    if n.op == "zeros":
        return {"name": n.name, "op": "zeros", "width": n.width}
    if n.op == "add":
        return {"name": n.name, "op": "add", "inputs": list(n.inputs)}
    return {
        "name": n.name,
        "op": "layer",
        "inputs": list(n.inputs),
        "width": n.width,
        "activation": n.activation,
        "params": n.params,
    }


def graph_from_json(text: str) -> GraphSpec:
    """A ``GraphSpec`` from the JSON format of the module docstring, validated strictly."""
    if not isinstance(text, str):
        raise TypeError(f"graph_from_json takes a str, got {type(text).__name__}")
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"graph JSON is {len(text)} characters, above {MAX_JSON_CHARS}")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"graph JSON does not parse: {exc}") from None
    except RecursionError:  # '[[[[…' deep enough to exhaust the parser's stack
        raise ValueError("graph JSON is nested too deeply") from None
    _keys(doc, _KEYS["top"], "graph", optional=frozenset({"weight_decay"}))
    if doc["format"] != FORMAT or type(doc["version"]) is not int or doc["version"] != 1:
        raise ValueError(f"graph JSON: format must be {FORMAT!r} and version 1")
    inputs = [_json_input(i, item) for i, item in enumerate(_list(doc["inputs"], "inputs"))]
    nodes = [_json_node(i, item) for i, item in enumerate(_list(doc["nodes"], "nodes"))]
    outputs = tuple(_string(o, "outputs[]") for o in _list(doc["outputs"], "outputs"))
    alpha = doc.get("weight_decay", 0.0)
    return GraphSpec((*inputs, *nodes), outputs, _string(doc["loss"], "loss"), alpha)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"graph JSON: key {shown_name(k)} appears twice in one object")
        out[k] = v
    return out


def _keys(item: object, keys: set[str], where: str, optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(item, dict):
        raise TypeError(f"graph JSON: {where} must be an object, got {type(item).__name__}")
    if set(item) - optional != keys:
        keys = keys | (set(item) & optional)
        extra, missing = sorted(set(item) - keys), sorted(keys - set(item))
        raise ValueError(f"graph JSON: {where} has unknown keys {extra} / lacks keys {missing}")


def _list(item: object, where: str) -> list[Any]:
    if not isinstance(item, list):
        raise TypeError(f"graph JSON: {where} must be a list, got {type(item).__name__}")
    return item


def _string(item: object, where: str) -> str:
    if not isinstance(item, str):
        raise TypeError(f"graph JSON: {where} must be a string, got {type(item).__name__}")
    return item


def _int(item: object, where: str) -> int:
    if isinstance(item, bool) or not isinstance(item, int):
        raise TypeError(f"graph JSON: {where} must be an integer, got {item!r}")
    return item


def _json_input(i: int, item: object) -> NodeSpec:
    _keys(item, _KEYS["input"], f"inputs[{i}]")
    assert isinstance(item, dict)
    return NodeSpec(
        _string(item["name"], f"inputs[{i}].name"),
        "input",
        _int(item["width"], f"inputs[{i}].width"),
    )


def _json_node(i: int, item: object) -> NodeSpec:
    where = f"nodes[{i}]"
    if not isinstance(item, dict) or item.get("op") not in ("layer", "add", "zeros"):
        raise ValueError(f"graph JSON: {where} must be an object with op layer, add or zeros")
    _keys(item, _KEYS[item["op"]], where)
    name = _string(item["name"], f"{where}.name")
    if item["op"] == "zeros":
        return NodeSpec(name, "zeros", _int(item["width"], f"{where}.width"))
    sources = tuple(
        _string(u, f"{where}.inputs[]") for u in _list(item["inputs"], f"{where}.inputs")
    )
    if item["op"] == "add":
        return NodeSpec(name, "add", 1, sources)  # the width is its inputs', set on replay
    return NodeSpec(
        name,
        "layer",
        _int(item["width"], f"{where}.width"),
        sources,
        _string(item["activation"], f"{where}.activation"),
        _string(item["params"], f"{where}.params"),
    )
