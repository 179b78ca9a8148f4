"""Exact arithmetic in the prime field GF(p), p = 2⁶¹ − 1, over SymPy expression DAGs.

Used by ``verify`` for exact randomized identity testing (Schwartz–Zippel). Every function
application f(u_1..u_m) — σ, σ', log, softmax, … — is read as an *uninterpreted* function: its
value is a random oracle of (f, u-values), so an identity that survives holds for every choice
of those functions, and derivatives enter only through the derivative rules SymPy's ``fdiff``
states. Arithmetic is exact (no rounding), and memoised per sub-expression, so shared
sub-expressions cost once however often the expression tree repeats them.

Each value carries a bound (num, den) on the degrees of a numerator and denominator that
represent it as a rational function of the random inputs and oracle values; the Schwartz–Zippel
error bound of a trial is computed from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TypeVar

import sympy as sp

P = 2**61 - 1
T = TypeVar("T")


class Degenerate(ArithmeticError):
    """A division by zero at the sampled point: the trial is redrawn."""


def retry(attempt: Callable[[], T], tries: int = 10) -> T:
    """``attempt()`` until a try does not divide by zero at its sampled point (``Degenerate``);
    the last try's ``Degenerate`` propagates."""
    for _ in range(tries - 1):
        try:
            return attempt()
        except Degenerate:
            continue
    return attempt()


def inverse(a: int) -> int:
    """a⁻¹ in GF(p)."""
    if a % P == 0:
        raise Degenerate("division by zero at the sampled point")
    return pow(a, P - 2, P)


@dataclass
class Oracle:
    """A random function: f(args) = hash(seed, name of f, values of args) mod p."""

    seed: int
    keys: set[tuple[str, tuple[int, ...]]] = field(default_factory=set)

    def __call__(self, name: str, args: tuple[int, ...]) -> int:
        self.keys.add((name, args))
        data = f"{self.seed}|{name}|{','.join(map(str, args))}".encode()
        return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big") % P


@dataclass(frozen=True)
class Deg:
    """Degree bounds of a numerator and a denominator."""

    num: int
    den: int

    def __add__(self, o: Deg) -> Deg:
        return Deg(max(self.num + o.den, o.num + self.den), self.den + o.den)

    def __mul__(self, o: Deg) -> Deg:
        return Deg(self.num + o.num, self.den + o.den)

    def pow(self, n: int) -> Deg:
        return Deg(n * self.num, n * self.den) if n >= 0 else Deg(-n * self.den, -n * self.num)

    @property
    def total(self) -> int:
        return self.num + self.den


CONST = Deg(0, 0)
FRESH = Deg(1, 0)


def number(q: sp.Rational) -> int:
    """A SymPy rational as an element of GF(p)."""
    return int(q.p) % P * inverse(int(q.q)) % P


@dataclass
class Value:
    """A field value, its tangent vector (forward-mode, may be empty) and their degree bounds."""

    v: int
    deg: Deg
    t: list[int] | None = None  # None: tangent identically zero
    tdeg: Deg = CONST


class Evaluator:
    """Evaluate SymPy expressions exactly in GF(p) at ``env``, with optional tangents (duals).

    ``env`` maps Symbols to Values. With ``dims > 0`` every Value carries a tangent of that
    length and products follow the product rule, function applications the chain rule through
    the function's SymPy ``fdiff``: exact forward-mode differentiation.
    """

    def __init__(self, env: dict[sp.Symbol, Value], oracle: Oracle, dims: int = 0) -> None:
        self.env = env
        self.oracle = oracle
        self.dims = dims
        self.memo: dict[sp.Basic, Value] = {}
        self.max_deg = 0

    def __call__(self, expr: sp.Basic) -> Value:
        hit = self.memo.get(expr)
        if hit is None:
            hit = self.memo[expr] = self._eval(expr)
            self.max_deg = max(self.max_deg, hit.deg.total, hit.tdeg.total)
        return hit

    def _eval(self, e: sp.Basic) -> Value:
        if e.is_Symbol:
            if e not in self.env:
                raise KeyError(f"no value for symbol {e}")
            return self.env[e]
        if e.is_Rational:
            return Value(number(e), CONST)
        if e.is_Add:
            return _fold(self, e.args, self.add)
        if e.is_Mul:
            return _fold(self, e.args, self.mul)
        if e.is_Pow and e.exp.is_Integer:
            return self._pow(self(e.base), int(e.exp))
        if e.is_Pow or e.is_NumberSymbol:  # u**a (a not an integer), π, e: uninterpreted
            return self._apply(e)
        if isinstance(e, sp.Function):
            return self._apply(e)
        raise TypeError(f"cannot evaluate {type(e).__name__} exactly: {e}")

    def add(self, a: Value, b: Value) -> Value:
        t = _lin(a.t, 1, b.t, 1)
        return Value((a.v + b.v) % P, a.deg + b.deg, t, a.tdeg + b.tdeg)

    def mul(self, a: Value, b: Value) -> Value:
        t = _lin(a.t, b.v, b.t, a.v)
        return Value(a.v * b.v % P, a.deg * b.deg, t, (a.deg * b.tdeg) + (b.deg * a.tdeg))

    def _pow(self, a: Value, n: int) -> Value:
        if n < 0:
            a = Value(
                inverse(a.v),
                a.deg.pow(-1),
                None if a.t is None else _scale(a.t, -inverse(a.v * a.v % P)),
                a.tdeg * a.deg.pow(-2),
            )
            n = -n
        out = Value(1, CONST)
        for _ in range(n):
            out = self.mul(out, a)
        return out

    def _apply(self, e: sp.Basic) -> Value:
        args = [self(a) for a in e.args]
        value = Value(self.oracle(type(e).__name__, tuple(a.v for a in args)), FRESH)
        if not self.dims:
            return value
        t: list[int] | None = None
        tdeg = CONST
        for j, a in enumerate(args):
            if a.t is None:
                continue
            partial = self._partial(e, j, args)  # ∂f/∂u_j through fdiff, evaluated
            t = _lin(t, 1, a.t, partial.v)
            tdeg = tdeg + (partial.deg * a.tdeg)
        value.t, value.tdeg = t, tdeg
        return value

    def _partial(self, e: sp.Function, j: int, args: Sequence[Value]) -> Value:
        placeholders, formula = _derivative_rule(
            e.func, j, tuple(a if a.is_Number else None for a in e.args)
        )
        env = {p: Value(a.v, a.deg) for p, a in zip(placeholders, args) if not p.is_Number}
        sub = Evaluator(env, self.oracle)
        out = sub(formula)
        self.max_deg = max(self.max_deg, sub.max_deg)
        return out


@cache
def _derivative_rule(
    func: type, j: int, fixed: tuple[sp.Basic | None, ...]
) -> tuple[list[sp.Basic], sp.Expr]:
    """∂f(u_1..u_m)/∂u_j as SymPy states it (``fdiff``), in placeholder symbols u_i."""
    placeholders = [
        a if a is not None else sp.Dummy(f"u{i}", real=True) for i, a in enumerate(fixed)
    ]
    return placeholders, sp.diff(func(*placeholders), placeholders[j])


def _fold(ev: Evaluator, args: Sequence[sp.Basic], op: object) -> Value:
    acc = ev(args[0])
    for a in args[1:]:
        acc = op(acc, ev(a))  # type: ignore[operator]
    return acc


def _scale(t: list[int], c: int) -> list[int]:
    return [x * c % P for x in t]


def _lin(ta: list[int] | None, ca: int, tb: list[int] | None, cb: int) -> list[int] | None:
    """ca·ta + cb·tb, with None standing for a zero tangent."""
    if ta is None:
        return None if tb is None else _scale(tb, cb)
    if tb is None:
        return _scale(ta, ca)
    return [(x * ca + y * cb) % P for x, y in zip(ta, tb)]


def seed_value(v: int, index: int | None = None, dims: int = 0) -> Value:
    """A random input: a fresh variable of degree 1, with unit tangent e_index if given."""
    if index is None:
        return Value(v % P, FRESH)
    t = [0] * dims
    t[index] = 1
    return Value(v % P, FRESH, t, CONST)
