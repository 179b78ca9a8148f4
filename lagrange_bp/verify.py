"""Step 5: prove that the KKT equations of ``derive`` are backpropagation, step by step.

(a) ∂L/∂λ = 0 is exactly the forward pass x^k = σ_k(W^k x^{k-1} + b^k).
(b) the adjoint solution makes every ∂L/∂x^k_i vanish.
(c) at the KKT point ∂L/∂θ = ∂J/∂θ for every parameter θ, where J(θ) = ℓ(y, x^N(θ)) is the
    composed loss differentiated by the chain rule (exact forward-mode dual numbers).
(d) (a)–(c) again with every σ_k an undefined function with derivative σ'_k: the identity holds
    for every differentiable activation.
(e) each concrete σ' used is SymPy's derivative of σ's explicit definition.

(a), (b), (e) are exact symbolic. (c), (d) are exact randomized identity tests in GF(p)
(``field``): function values are a random oracle, so the test does not depend on which σ is
used, and the Schwartz–Zippel lemma bounds the chance that unequal sides agree.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from .field import CONST, FRESH, Degenerate, Evaluator, Oracle, P, Value, retry, seed_value
from .functions import Activation, get_activation, get_loss
from .graph import GraphSpec
from .graph_kkt import GraphDerivation
from .graph_model import GraphModel
from .kkt import Derivation, derive
from .lagrangian import ALPHA, decay, layer_activations, preactivation
from .model import Model
from .spec import MAX_EXACT_WEIGHTS, NetworkSpec


@dataclass
class Step:
    """One proof step: what it claims, whether it holds, how it was shown, how long it took."""

    label: str
    claim: str
    ok: bool
    method: str
    detail: str
    seconds: float


@dataclass
class Report:
    """A proof — of a spec's equations, of the general case, or of a model's kernels — as
    steps; ``ok`` when every step holds. ``derive_seconds`` is the time spent before the steps
    (the derivations, or the exact reference), named by ``preparation``."""

    title: str
    spec: NetworkSpec | GraphSpec | None = None  # None for the general proof: about every spec
    steps: list[Step] = field(default_factory=list)
    derive_seconds: float = 0.0
    preparation: str = "derivations"

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def seconds(self) -> float:
        return self.derive_seconds + sum(s.seconds for s in self.steps)

    def to_dict(self) -> dict[str, object]:
        """The report as JSON-ready data."""
        return {
            "title": self.title,
            "spec": self.spec.describe() if self.spec is not None else None,
            "ok": self.ok,
            "seconds": round(self.seconds, 4),
            self.preparation.replace(" ", "_") + "_seconds": round(self.derive_seconds, 4),
            "steps": [
                {
                    "step": s.label,
                    "claim": s.claim,
                    "ok": s.ok,
                    "method": s.method,
                    "detail": s.detail,
                    "seconds": round(s.seconds, 4),
                }
                for s in self.steps
            ],
        }

    def summary(self) -> str:
        """Two lines: the verdict and time, then each step ✓ (or the failed steps' claims)."""
        from .display import report_summary

        return report_summary(self)

    def __repr__(self) -> str:
        from .display import report_repr

        return report_repr(self)

    def _repr_markdown_(self) -> str:
        from .display import report_markdown

        return report_markdown(self)

    def _repr_latex_(self) -> str:
        from .display import report_latex

        return report_latex(self)

    def __str__(self) -> str:
        verdict = "PROVEN" if self.ok else "NOT PROVEN"
        lines = [
            f"{self.title}: {verdict} ({self.seconds:.2f} s, of which {self.preparation} "
            f"{self.derive_seconds:.2f} s)"
        ]
        for s in self.steps:
            lines.append(
                f"  [{'ok' if s.ok else 'FAILED'}] ({s.label}) {s.claim}  [{s.seconds:.2f} s]"
            )
            lines.append(f"       method: {s.method}")
            lines += [f"       {line}" for line in s.detail.splitlines()]
        return "\n".join(lines)


Progress = Callable[[str], None]


def timed_step(
    label: str,
    claim: str,
    method: str,
    check: Callable[[], tuple[bool, str]],
    progress: Progress | None,
    prefix: str = "verify",
) -> Step:
    """Run one proof step, time it, and report it to ``progress``."""
    start = time.perf_counter()
    ok, detail = check()
    step = Step(label, claim, ok, method, detail, time.perf_counter() - start)
    if progress:
        progress(f"{prefix}: ({label}) {'ok' if ok else 'FAILED'} in {step.seconds:.2f} s")
    return step


def check_forward(d: Derivation) -> tuple[bool, str]:
    """(a) each x^k_i from ∂L/∂λ^k_i = 0 equals σ_k(W^k x^{k-1} + b^k)_i built from the spec."""
    acts = layer_activations(d.spec, d.abstract)
    expected = [
        (xk, rhs)
        for k in acts
        for xk, rhs in zip(d.symbols.x[k], acts[k].apply(preactivation(d.symbols, k)))
    ]
    return same_forward(d.forward, expected, "x^1..x^N in order")


def same_forward(
    forward: list[sp.Eq], expected: list[tuple[sp.Symbol, sp.Expr]], order: str
) -> tuple[bool, str]:
    """Each derived forward equation x = rhs is the spec's, in the spec's ``order``."""
    if [eq.lhs for eq in forward] != [x for x, _ in expected]:
        return False, f"the forward equations are not {order}"
    for eq, (_, rhs) in zip(forward, expected):
        if eq.rhs != rhs and sp.expand(eq.rhs - rhs) != 0:
            return False, f"{eq.lhs} = {eq.rhs}\nbut the forward pass gives {rhs}"
    return True, f"{len(forward)} of {len(forward)} equations identical to the forward pass"


def check_adjoint(d: Derivation) -> tuple[bool, str]:
    """(b) ∂L/∂x^k_i with λ^k_i replaced by its solution is identically 0."""
    x_of = {lam: x for k in d.symbols.lam for x, lam in zip(d.symbols.x[k], d.symbols.lam[k])}
    for eq in d.adjoint:
        x = x_of[eq.lhs]
        residual = d.stationarity[x].xreplace({eq.lhs: eq.rhs})
        if residual != 0 and sp.expand(residual) != 0:
            return False, f"with {eq.lhs} = {eq.rhs}, ∂L/∂{x} = {sp.expand(residual)} ≠ 0"
    return True, f"{len(d.adjoint)} of {len(d.adjoint)} residuals ∂L/∂x^k_i are exactly 0"


def _random_point(d: Derivation | GraphDerivation, rng: random.Random) -> dict[sp.Symbol, int]:
    data = list(d.input) + list(d.target) + d.param_symbols()
    if d.spec.weight_decay:  # α too is a random point: the identity holds for every α
        data.append(ALPHA)
    return {s: rng.randrange(P) for s in data}


def lagrangian_side(
    d: Derivation | GraphDerivation, point: dict[sp.Symbol, int], oracle: Oracle
) -> tuple[dict[sp.Symbol, int], int]:
    """∂L/∂θ at the KKT point: forward, then adjoint, then the gradient expressions."""
    ev = Evaluator({s: seed_value(v) for s, v in point.items()}, oracle)
    for eq in d.forward + d.adjoint:
        ev.env[eq.lhs] = ev(eq.rhs)
    return {p: ev(g).v for p, g in d.gradients.items()}, ev.max_deg


def _chain_rule_side(
    d: Derivation,
    point: dict[sp.Symbol, int],
    oracle: Oracle,
    direction: dict[sp.Symbol, int] | None = None,
) -> tuple[list[int], int]:
    """∂J/∂θ by exact forward-mode (dual numbers) through the composed loss J(θ) (plus its
    weight decay term): every partial (one tangent per parameter), or, given a direction v,
    the single dJ(θ + t v)/dt."""
    params = d.param_symbols()
    dims = 1 if direction is not None else len(params)
    env = seeded(point, params, direction)
    ev = Evaluator(env, oracle, dims)
    acts: dict[int, Activation] = layer_activations(d.spec, d.abstract)
    x: list[Value] = [env[s] for s in d.input]
    max_deg = 0
    for k, (W, b) in enumerate(d.params, start=1):
        z = [affine(ev, [env[w] for w in W.row(i)], x, env[b[i]]) for i in range(W.rows)]
        u = sp.symbols(f"u1:{len(z) + 1}", real=True)
        layer = Evaluator(dict(zip(u, z)), oracle, dims)
        x = [layer(e) for e in acts[k].apply(u)]
        max_deg = max(max_deg, layer.max_deg)
    u = sp.symbols(f"u1:{len(x) + 1}", real=True)
    head = Evaluator(dict(zip(u, x)) | {s: env[s] for s in d.target}, oracle, dims)
    loss = head(get_loss(d.spec.loss).apply(u, list(d.target)))
    if d.spec.weight_decay:
        loss = ev.add(loss, ev(sp.Add(*decay(d.spec, d.symbols))))
    return loss.t or [0] * dims, max(max_deg, head.max_deg, ev.max_deg)


def seeded(
    point: dict[sp.Symbol, int],
    params: list[sp.Symbol],
    direction: dict[sp.Symbol, int] | None = None,
) -> dict[sp.Symbol, Value]:
    """Dual numbers at ``point``: data (x⁰, y, α) constant; each parameter its own unit
    tangent, or, given a direction v, the one tangent v_θ."""
    dims, ps = 1 if direction is not None else len(params), set(params)
    env: dict[sp.Symbol, Value] = {s: seed_value(v) for s, v in point.items() if s not in ps}
    for i, p in enumerate(params):
        if direction is None:
            env[p] = seed_value(point[p], i, dims)
        else:
            env[p] = Value(point[p] % P, FRESH, [direction[p]], CONST)
    return env


def affine(ev: Evaluator, w: list[Value], x: list[Value], b: Value) -> Value:
    """b + Σ_j w_j x_j in dual numbers: one entry of z = W x + b."""
    acc = b
    for wi, xi in zip(w, x):
        acc = ev.add(acc, ev.mul(wi, xi))
    return acc


ChainRule = Callable[..., tuple[list[int], int]]


def check_gradients(
    d: Derivation | GraphDerivation,
    trials: int,
    seed: int,
    chain_rule: ChainRule | None = None,
    note: str = "",
) -> tuple[bool, str]:
    """(c)/(d) ∂L/∂θ at the KKT point equals ∂J/∂θ, exactly in GF(p), at random points.

    Per point the two gradient vectors are compared through a random linear combination
    Σ_θ v_θ ∂L/∂θ = dJ(θ + t v)/dt (one dual-number pass instead of one per parameter);
    unequal vectors agree there with probability 1/p. A disagreement is then located
    parameter by parameter. ``chain_rule`` is J's dual-number side (default: the chain's;
    a graph passes its own), ``note`` a remark for the detail.
    """
    side: ChainRule = _chain_rule_side if chain_rule is None else chain_rule
    rng = random.Random(seed)
    params = d.param_symbols()

    def attempt() -> tuple[dict[sp.Symbol, int], int, int, int, Oracle, dict[sp.Symbol, int]]:
        point, oracle = _random_point(d, rng), Oracle(rng.randrange(2**64))
        v = {p: rng.randrange(P) for p in params}
        lhs, deg_l = lagrangian_side(d, point, oracle)
        (along,), deg_j = side(d, point, oracle, v)
        return (
            lhs,
            along,
            max(deg_l, deg_j) + 2,
            sum(lhs[p] * v[p] for p in params) % P,
            oracle,
            point,
        )

    bound = 1.0
    for done in range(1, trials + 1):
        try:
            lhs, along, degree, combined, oracle, point = retry(attempt)
        except Degenerate:
            return False, "every sampled point hit a division by zero"
        if combined != along:
            rhs, _ = side(d, point, oracle)
            for p, r in zip(params, rhs):
                if lhs[p] != r:
                    return False, (
                        f"∂L/∂{p} ≠ ∂J/∂{p} at random point {done}: the Lagrangian gives "
                        f"{lhs[p]}, the chain rule {r} (mod 2^61-1)\n∂L/∂{p} = {d.gradients[p]}"
                    )
            return False, "the random combinations differ but no single partial does"
        calls = len(oracle.keys)
        bound *= min(1.0, (degree * (1 + calls * (calls - 1) / 2) + 1) / P)
    return True, (
        f"all {len(d.gradients)} parameters agree exactly at {trials} random points of GF(2^61-1) "
        f"(a random combination of the {len(params)} partials per point{note})\nchance that "
        f"unequal sides agree at all of them ≤ {bound:.1e} (Schwartz–Zippel, degree and "
        "oracle-collision bound)"
    )


def check_derivatives(spec: NetworkSpec) -> tuple[bool, str]:
    """(e) each σ' used is the derivative of σ's explicit definition (the record's own check)."""
    lines = []
    for name in dict.fromkeys(spec.activations):
        width = max(n for n, a in zip(spec.widths[1:], spec.activations) if a == name)
        ok, line = get_activation(name).check_derivative(width)
        lines.append(line)
        if not ok:
            return False, "\n".join(lines)
    return True, "\n".join(lines)


MAX_TRIALS = 100


def check_trials(trials: object) -> int:
    """The number of random points of an identity test: a positive int up to MAX_TRIALS."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    if trials > MAX_TRIALS:
        raise ValueError(
            f"trials must be at most {MAX_TRIALS}, got {trials}: each point multiplies the "
            f"chance that a wrong identity survives by about 1e-15, so a few suffice"
        )
    return trials


def verify(
    spec: NetworkSpec | GraphSpec | Model | GraphModel,
    *,
    trials: int | None = None,
    seed: int = 0,
    max_weights: int | None = MAX_EXACT_WEIGHTS,
    derivation: Derivation | GraphDerivation | None = None,
    progress: Progress | None = None,
) -> Report:
    """Prove, step by step, that the spec's KKT equations are backpropagation — or, given a
    compiled model, that its generated kernels compute them (``verify_compiled``).

    ``trials`` random points (default 2 for a spec, 1 for a model); ``derivation`` replaces
    ``derive(spec)`` (to check a derivation from elsewhere); ``progress`` receives one line as
    each stage finishes. A ``GraphSpec`` is proven by ``graph_verify.verify_graph``.
    """
    if isinstance(spec, GraphSpec):
        from .graph_verify import verify_graph

        return verify_graph(
            spec, trials=trials, seed=seed, max_weights=max_weights, derivation=derivation,
            progress=progress,
        )  # fmt: skip
    if isinstance(derivation, GraphDerivation):
        raise TypeError("derivation= is a graph's derivation; pass its GraphSpec as spec")
    if isinstance(spec, GraphModel):  # a compiled graph: its kernels, run exactly
        from .graph_verify_compiled import verify_graph_model

        if derivation is not None:
            raise ValueError("derivation= applies to a spec, not to a compiled model")
        n = check_trials(1 if trials is None else trials)
        return verify_graph_model(spec, trials=n, seed=seed, progress=progress)
    if isinstance(spec, Model):
        if derivation is not None:
            raise ValueError("derivation= applies to a spec, not to a compiled model")
        from .verify_compiled import verify_model

        n = check_trials(1 if trials is None else trials)
        return verify_model(spec, trials=n, seed=seed, progress=progress)
    if not isinstance(spec, NetworkSpec):
        raise TypeError(
            f"verify takes a lagrange_bp.NetworkSpec or a compiled Model (or a GraphSpec), got "
            f"{type(spec).__name__}"
        )
    trials = check_trials(2 if trials is None else trials)
    if derivation is not None and (derivation.spec != spec or derivation.abstract):
        raise ValueError(
            f"derivation is for {derivation.spec.describe()}"
            f"{' with abstract σ' if derivation.abstract else ''}, not for {spec.describe()}"
        )
    concrete = derivation if derivation is not None else derive(spec, max_weights=max_weights)
    abstract = derive(spec, abstract=True, max_weights=max_weights)
    if progress:
        progress(
            f"verify: derived {spec.describe()} with concrete and abstract σ "
            f"in {concrete.seconds + abstract.seconds:.2f} s"
        )
    report = Report(
        f"Proof that the KKT conditions of L are backpropagation for {spec.describe()}",
        spec,
        derive_seconds=concrete.seconds + abstract.seconds,
    )
    exact = "exact symbolic (SymPy, structural equality after expand)"
    rand = (
        f"exact randomized identity test in GF(2^61-1), σ values from a random oracle, "
        f"{trials} points"
    )
    report.steps = [
        timed_step(
            "a",
            "∂L/∂λ = 0 is exactly the forward pass x^k = σ_k(W^k x^{k-1} + b^k)",
            exact,
            lambda: check_forward(concrete),
            progress,
        ),
        timed_step(
            "b",
            "the adjoint solution λ^N, ..., λ^1 makes every ∂L/∂x^k vanish",
            exact,
            lambda: check_adjoint(concrete),
            progress,
        ),
        timed_step(
            "c",
            "at the KKT point ∂L/∂θ = ∂J/∂θ (chain rule through J(θ) = ℓ(y, x^N(θ))"
            f"{_decay_claim(spec)}) for every W and b entry",
            rand + ", reference: exact forward-mode dual numbers",
            lambda: check_gradients(concrete, trials, seed),
            progress,
        ),
        timed_step(
            "d",
            "(a)–(c) hold with every σ_k an undefined function σ_k, σ'_k its derivative: "
            "true for every differentiable activation",
            "(a), (b) exact symbolic; (c) " + rand,
            lambda: _abstract_checks(abstract, trials, seed),
            progress,
        ),
        timed_step(
            "e",
            "each concrete σ' in the derivation is SymPy's derivative of σ",
            "exact symbolic (SymPy's derivative of σ written in exp, log and cases, for z > 0 "
            "and z < 0)",
            lambda: check_derivatives(spec),
            progress,
        ),
    ]
    return report


def _decay_claim(spec: NetworkSpec) -> str:
    return " + (α/2) Σ_k ‖W^k‖², for every α" if spec.weight_decay else ""


def _abstract_checks(d: Derivation, trials: int, seed: int) -> tuple[bool, str]:
    details = []
    for check in (check_forward, check_adjoint):
        ok, detail = check(d)
        details.append(detail)
        if not ok:
            return False, detail
    ok, detail = check_gradients(d, trials, seed + 1)
    details.append(detail)
    if not all(get_activation(a).elementwise for a in d.spec.activations):
        details.append(
            "vector layers (softmax) are elementwise σ_k here; (c) covers them as they are"
        )
    return ok, "\n".join(details)
