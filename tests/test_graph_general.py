"""The general proof for graphs (issue 16, item 3): ``verify_graph_general`` and
``lagrange-bp verify --general --graph/--recurrent``; a wrong share or a dropped consumer in a
sum fails the step that is about it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import sympy as sp
from conftest import run_cli as run

import lagrange_bp as lbp
from lagrange_bp.graph_general import (
    check_induction,
    check_multipliers,
    check_node,
    default_graphs,
    shared,
    sum_by_origin,
    three_consumers,
    verify_graph_general,
)
from lagrange_bp.graph_generic import NodeEquations, derive_node

RNN = lbp.recurrent(2, 2, 1, 3, outputs_at="every")


def statuses(report: lbp.Report) -> dict[str, bool]:
    return {s.label: s.ok for s in report.steps}


def test_the_general_graph_proof_holds() -> None:
    report = verify_graph_general(seed=0)
    assert report.ok, str(report)
    assert list(statuses(report)) == ["G1", "G2", "G3", "G4"]
    assert report.spec is None and "any graph of layer and add nodes" in report.title
    g4 = report.steps[3].detail.splitlines()
    assert len(g4) == len(default_graphs()) and all("equal exactly" in line for line in g4)
    assert "cell tanh 3 ×3 shared" in report.steps[3].detail  # the RNN, T = 3, every step
    assert "reverse topological order" in report.steps[2].detail
    assert report.seconds < 60


def test_every_node_kind_is_the_chain_rule() -> None:
    for kind, m in (("layer", 1), ("layer", 2), ("layer", 3), ("add", 2), ("add", 3)):
        ok, line = check_node(derive_node(kind, m))
        assert ok, line


def dropped_sigma_prime(kind: str, m: int) -> NodeEquations:
    """Layer shares to the first input read W_0ᵀ Λ_v: σ' forgotten."""
    eq = derive_node(kind, m)
    if kind != "layer":
        return eq
    wrong = eq.weights[0].T * eq.Lam
    return dataclasses.replace(eq, to_input=(wrong, *eq.to_input[1:]))


def transposed_weight_share(kind: str, m: int) -> NodeEquations:
    """∂L/∂W_j's share transposed: −X_{u_j} G_vᵀ in place of −G_v X_{u_j}ᵀ."""
    eq = derive_node(kind, m)
    if kind != "layer":
        return eq
    wrong = tuple(-U * eq.G.T for U in eq.inputs)
    return dataclasses.replace(eq, weight_gradients=wrong)


def wrong_add_share(kind: str, m: int) -> NodeEquations:
    """An add's share to its last input with the sign flipped."""
    eq = derive_node(kind, m)
    if kind != "add":
        return eq
    return dataclasses.replace(eq, to_input=(*eq.to_input[:-1], -eq.to_input[-1]))


@pytest.mark.parametrize(
    ("wrong", "graphs"),
    [
        (dropped_sigma_prime, (three_consumers(),)),
        (transposed_weight_share, (RNN,)),  # W_h is square: G4 sees wrong values, not shapes
        (transposed_weight_share, (shared(),)),
        (wrong_add_share, (shared(),)),
    ],
    ids=["dropped-sigma-prime", "transposed-W-share-square", "transposed-W-share", "add-sign"],
)
def test_a_wrong_share_fails_G1_and_G4(wrong: object, graphs: tuple) -> None:
    report = verify_graph_general(graphs, node_equations=wrong)  # type: ignore[arg-type]
    assert not report.ok
    assert statuses(report) == {"G1": False, "G2": True, "G3": True, "G4": False}


def drop_last(terms: Sequence[sp.Basic]) -> sp.Basic:
    """A sum that forgets its last consumer (or use)."""
    return sum_by_origin(terms[:-1]) if len(terms) > 1 else terms[0]


def test_a_dropped_consumer_fails_G2_G3_and_G4() -> None:
    report = verify_graph_general((three_consumers(), RNN), total=drop_last)
    assert statuses(report) == {"G1": True, "G2": False, "G3": False, "G4": False}
    assert "Λ_pq" in report.steps[1].detail
    assert "copies" in report.steps[2].detail
    assert "sum of the generic terms" in report.steps[3].detail


def test_the_sums_alone() -> None:
    assert check_induction(4, sum_by_origin)[0]
    assert check_multipliers(3, sum_by_origin, ["mse", "cross_entropy"])[0]
    twice_first = lambda ts: ts[0] + sum_by_origin(ts)  # noqa: E731
    assert not check_induction(2, twice_first)[0]
    assert not check_multipliers(1, twice_first, ["mse"])[0]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="GraphSpec"):
        verify_graph_general(())
    with pytest.raises(TypeError, match="GraphSpec"):
        verify_graph_general([lbp.NetworkSpec((2, 2), "tanh", "mse")])  # type: ignore[list-item]


def test_a_wide_graph_extends_the_kinds_and_copies() -> None:
    """A layer with 4 inputs and a node read by 4 consumers: G1 derives that kind, G3 takes
    five copies, G4 checks the graph."""
    g = lbp.Graph(inputs=2)
    x = g.inputs[0]
    h = g.layer(x, 2, "tanh", name="h")
    a, b, c = (g.layer(h, 1, "sigmoid", name=n) for n in "abc")
    spec = g.output(g.layer([h, a, b, c], 2, "identity", name="out"), loss="mse")
    report = verify_graph_general((spec,), seed=3)
    assert report.ok, str(report)
    assert "layer, m = 4" in report.steps[0].detail
    assert "1..5 copies" in report.steps[2].detail


def test_cli_verify_general_recurrent(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "verify", "--general", "--recurrent", "--steps", "2")
    assert code == 0, out + err
    assert out.startswith("General proof for graphs") and "PROVEN" in out.splitlines()[0]
    assert "graph 1+1 → 1: cell tanh 2 ×2 shared" in out  # the given graph is instantiated too
    assert "(G4) ok" in err


def test_cli_verify_general_graph_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(three_consumers().to_json(), encoding="utf-8")
    code, out, _ = run(capsys, "verify", "--general", "--graph", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] and [s["step"] for s in data["steps"]] == ["G1", "G2", "G3", "G4"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("derive", "--general", "--recurrent"), "--general does not apply"),
        (("verify", "--general", "--compiled", "--recurrent"), "--compiled does not apply"),
        (("verify", "--general", "--graph", "missing.json"), "no such file"),
        (("verify", "--general", "--recurrent", "--widths", "2,2"), "--widths does not apply"),
    ],
)
def test_cli_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *(str(tmp_path / a) if a == "missing.json" else a for a in args))
    assert code == 2 and message in err and not out


def test_cli_not_proven_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lagrange_bp import cli, graph_general

    def wrong(graphs: Sequence[lbp.GraphSpec], **kw: object) -> lbp.Report:
        return graph_general.verify_graph_general(graphs, total=drop_last, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "verify_graph_general", wrong)
    monkeypatch.setattr(cli, "default_graphs", lambda: ())
    code, out, _ = run(capsys, "verify", "--general", "--recurrent", "--steps", "2")
    assert code == 1 and "NOT PROVEN" in out.splitlines()[0]
