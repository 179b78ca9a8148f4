"""A stand-in for NumPy that runs generated kernel source exactly, over GF(p), p = 2⁶¹ − 1.

``namespace(oracle, constants)`` returns the globals a kernel's source is executed in instead
of ``{"np": numpy, "scipy": scipy}``: the same names (``np.matmul``, ``np.tanh``,
``scipy.special.expit``, …) with the same arguments, ``out=`` included, computing on
``FieldArray``s. Arithmetic is exact modular arithmetic. Every scalar function is read as in
the proofs (``field``): a random oracle of its argument, keyed by the SymPy function the
printer's table ``primitives.NUMPY_FORMS`` maps to that ufunc — so ``np.maximum(x, 0.0)`` is
relu and ``np.logaddexp(0.0, x)`` is softplus, and any other use of those ufuncs is refused.
Float literals in the source are mapped back to the exact values the printer recorded.

One deliberate gap: ``np.maximum.reduce`` (the shift subtracted before a softmax's exp)
returns 0. The shift cancels in exact arithmetic (softmax(z − c) = softmax(z)); random oracles
cannot express exp(a − c) = exp(a)/exp(c), so the check runs the unshifted formula.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import sympy as sp

from .field import CONST, FRESH, Deg, Degenerate, Evaluator, Oracle, P, inverse, number
from .primitives import NUMPY_FORMS


class ExactInt:
    """A size such as B = X.shape[0]: an integer whose arithmetic is exact field arithmetic
    (not an int subclass, so that ``0.5 / B`` reaches ``__rtruediv__``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n

    def _field(self) -> ExactScalar:
        return ExactScalar(self.n, CONST)

    def __truediv__(self, other: object) -> ExactScalar:
        return self._field() / other

    def __rtruediv__(self, other: object) -> ExactScalar:
        return ExactScalar.of(other) / self._field()

    def __mul__(self, other: object) -> ExactScalar:
        return self._field() * other

    __rmul__ = __mul__


class ExactScalar:
    """A field element used as a scalar (η, 1/B, a loss value), with its degree bound."""

    constants: ClassVar[dict[float, int]] = {}  # float literal → exact field value, per run

    def __init__(self, v: int, deg: Deg) -> None:
        self.v, self.deg = v % P, deg

    @classmethod
    def of(cls, x: object) -> ExactScalar:
        if isinstance(x, ExactScalar):
            return x
        if isinstance(x, ExactInt):
            return cls(x.n, CONST)
        if isinstance(x, (bool, np.bool_)):
            raise TypeError("a boolean reached exact arithmetic")
        if isinstance(x, (int, np.integer)):
            return cls(int(x), CONST)
        if isinstance(x, (float, np.floating)):
            value = cls.constants.get(float(x))
            if value is None:  # a literal the printer did not record: its binary value
                value = number(sp.Rational(Fraction(float(x))))
            return cls(value, CONST)
        raise TypeError(f"cannot use {type(x).__name__} in exact arithmetic")

    def __add__(self, o: object) -> ExactScalar:
        o = ExactScalar.of(o)
        return ExactScalar(self.v + o.v, self.deg + o.deg)

    __radd__ = __add__

    def __mul__(self, o: object) -> ExactScalar:
        o = ExactScalar.of(o)
        return ExactScalar(self.v * o.v, self.deg * o.deg)

    __rmul__ = __mul__

    def __sub__(self, o: object) -> ExactScalar:
        return self + (-ExactScalar.of(o))

    def __rsub__(self, o: object) -> ExactScalar:
        return ExactScalar.of(o) - self

    def __neg__(self) -> ExactScalar:
        return ExactScalar(-self.v, self.deg)

    def __truediv__(self, o: object) -> ExactScalar:
        o = ExactScalar.of(o)
        return ExactScalar(self.v * inverse(o.v), self.deg * o.deg.pow(-1))

    def __rtruediv__(self, o: object) -> ExactScalar:
        return ExactScalar.of(o) / self

    def __float__(self) -> float:
        raise TypeError("an exact field value has no float value")


class FieldArray:
    """An array of field elements (an object array of Python ints in [0, p)) and a bound on
    the degrees of the rational functions its entries are."""

    def __init__(self, a: np.ndarray, deg: Deg) -> None:
        self.a, self.deg = a, deg

    @property
    def shape(self) -> tuple[ExactInt, ...]:
        return tuple(ExactInt(n) for n in self.a.shape)

    @property
    def T(self) -> FieldArray:
        return FieldArray(self.a.T, self.deg)


def _mod(a: np.ndarray) -> np.ndarray:
    return np.mod(a, P).astype(object)


_inverse = np.frompyfunc(inverse, 1, 1)


def _split(x: object) -> tuple[Any, Deg]:
    """An operand as (values, degree): an object array, or a Python int for a scalar."""
    if isinstance(x, FieldArray):
        return x.a, x.deg
    s = ExactScalar.of(x)
    return s.v, s.deg


def _store(out: FieldArray, values: Any, deg: Deg) -> FieldArray:
    out.a[...] = _mod(np.broadcast_to(np.asarray(values, dtype=object), out.a.shape))
    out.deg = deg
    return out


class Engine:
    """The fake ``np``: every function writes into ``out`` as NumPy's do."""

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle
        self.calls = 0

    def apply(self, name: str, *args: Any) -> Any:
        """The oracle value of the function ``name`` at each entry (a random function)."""
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if not arrays:
            return self.oracle(name, tuple(int(a) for a in args))
        shape = np.broadcast_shapes(*[a.shape for a in arrays])
        cols = [np.broadcast_to(a, shape) if isinstance(a, np.ndarray) else a for a in args]
        out = np.empty(shape, dtype=object)
        for index in np.ndindex(shape):
            key = tuple(int(c[index]) if isinstance(c, np.ndarray) else int(c) for c in cols)
            out[index] = self.oracle(name, key)
        self.calls += out.size
        return out

    # --- arithmetic -------------------------------------------------------------------
    def add(self, a: object, b: object, out: FieldArray) -> FieldArray:
        (x, dx), (y, dy) = _split(a), _split(b)
        return _store(out, x + y, dx + dy)

    def subtract(self, a: object, b: object, out: FieldArray) -> FieldArray:
        (x, dx), (y, dy) = _split(a), _split(b)
        return _store(out, x - y, dx + dy)

    def multiply(self, a: object, b: object, out: FieldArray) -> FieldArray:
        (x, dx), (y, dy) = _split(a), _split(b)
        return _store(out, x * y, dx * dy)

    def divide(self, a: object, b: object, out: FieldArray) -> FieldArray:
        (x, dx), (y, dy) = _split(a), _split(b)
        inv = _inverse(y) if isinstance(y, np.ndarray) else inverse(y)
        return _store(out, x * inv, dx * dy.pow(-1))

    def negative(self, a: FieldArray, out: FieldArray) -> FieldArray:
        return _store(out, -a.a, a.deg)

    def square(self, a: FieldArray, out: FieldArray) -> FieldArray:
        return _store(out, a.a * a.a, a.deg * a.deg)

    def copyto(self, out: FieldArray, src: object) -> None:
        x, d = _split(src)
        _store(out, x, d)

    def matmul(self, a: FieldArray, b: FieldArray, out: FieldArray) -> FieldArray:
        return _store(out, np.dot(a.a, b.a), summed(a.deg * b.deg, a.a.shape[-1]))

    def sum(
        self,
        a: FieldArray,
        axis: int | None = None,
        out: FieldArray | None = None,
        keepdims: bool = False,
    ) -> FieldArray | ExactScalar:
        """np.sum: along an axis into ``out``, or of every entry as a scalar (the loss)."""
        if axis is None:
            return ExactScalar(int(np.sum(a.a)), summed(a.deg, a.a.size))
        assert out is not None
        total = np.sum(a.a, axis=axis, keepdims=keepdims)
        return _store(out, total, summed(a.deg, a.a.shape[axis]))

    def vdot(self, a: FieldArray, b: FieldArray) -> ExactScalar:
        """np.vdot: Σ a ⊙ b over every entry, a scalar (the weight decay's ‖W‖²)."""
        return ExactScalar(int(np.sum(_mod(a.a * b.a))), summed(a.deg * b.deg, a.a.size))

    def max(self, a: FieldArray, axis: int, out: FieldArray, keepdims: bool = False) -> FieldArray:
        """The softmax shift: 0 (see the module docstring)."""
        return _store(out, 0, CONST)

    def power(self, a: object, b: object, out: FieldArray) -> FieldArray:
        (x, dx), (y, _) = _split(a), _split(b)
        exponent = _integer(b)
        if exponent is not None and isinstance(x, np.ndarray):  # x**n: products, as in field
            n = abs(exponent)
            base = _inverse(x) if exponent < 0 else x
            values = np.ones_like(base)
            for _ in range(n):
                values = _mod(values * base)
            return _store(out, values, dx.pow(exponent))
        return _store(out, self.apply("Pow", x, y), FRESH)

    def sqrt(self, a: FieldArray, out: FieldArray) -> FieldArray:
        return _store(out, self.apply("Pow", a.a, number(sp.Rational(1, 2))), FRESH)

    def function(self, name: str, before: tuple[str, ...], after: tuple[str, ...]) -> Callable:
        """The fake of a table ufunc: the oracle of the SymPy function ``name``, provided the
        fixed arguments are the table's (``np.maximum(x, 0.0)`` is relu; nothing else is)."""
        fixed = [ExactScalar.of(float(c)).v for c in (*before, *after)]

        def fake(*args: Any, out: FieldArray) -> FieldArray:
            if len(args) != len(fixed) + 1:
                raise TypeError(f"{name}'s ufunc called with {len(args)} arguments")
            value = args[len(before)]
            given = [_split(a)[0] for i, a in enumerate(args) if i != len(before)]
            if any(isinstance(g, np.ndarray) or g != f for g, f in zip(given, fixed)):
                raise TypeError(f"{name}'s ufunc called with other fixed arguments")
            x, _ = _split(value)
            return _store(out, self.apply(name, x), FRESH)

        return fake


def summed(deg: Deg, n: int) -> Deg:
    """The degree bound of a sum of n terms of bound ``deg`` (denominators multiply)."""
    return Deg(deg.num + (n - 1) * deg.den, n * deg.den)


def _integer(x: object) -> int | None:
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return int(x)
    return None


def namespace(oracle: Oracle, constants: dict[float, sp.Basic]) -> tuple[dict[str, Any], Engine]:
    """Globals to exec a kernel's source in, and the engine (for its oracle-call count)."""
    engine = Engine(oracle)
    evaluate = Evaluator({}, oracle)
    ExactScalar.constants = {f: evaluate(sp.sympify(c)).v for f, c in constants.items()}
    np_ns: dict[str, Any] = {
        name: getattr(engine, name)
        for name in (
            "add",
            "subtract",
            "multiply",
            "divide",
            "negative",
            "square",
            "copyto",
            "matmul",
            "sum",
            "vdot",
            "max",
            "power",
            "sqrt",
        )
    }
    scipy_special: dict[str, Any] = {}
    for fn, (qualified, before, after) in NUMPY_FORMS.items():
        fake = engine.function(fn.__name__, before, after)
        module, _, attr = qualified.rpartition(".")
        (np_ns if module == "numpy" else scipy_special)[attr] = fake
    # np.add.reduce, the sums (np.sum without its Python wrapper): np.add with a reduce
    add = engine.add

    def reduce(
        a: FieldArray,
        axis: int | None = 0,
        dtype: None = None,
        out: Any = None,
        keepdims: bool = False,
    ) -> Any:
        """np.add.reduce's signature (axis 0 by default); a dtype is refused, not ignored."""
        if dtype is not None:
            raise TypeError("np.add.reduce with a dtype in exact arithmetic")
        return engine.sum(a, axis, out, keepdims)

    np_ns["add"] = lambda a, b, out: add(a, b, out)
    np_ns["add"].reduce = reduce
    # np.maximum.reduce, the softmax's row maximum (np.max without its Python wrapper)
    if "maximum" in np_ns:
        np_ns["maximum"].reduce = engine.max
    else:
        np_ns["maximum"] = SimpleNamespace(reduce=engine.max)
    scipy_ns = SimpleNamespace(special=SimpleNamespace(**scipy_special))
    return {"np": SimpleNamespace(**np_ns), "scipy": scipy_ns}, engine


def field_array(values: np.ndarray, deg: Deg = FRESH) -> FieldArray:
    """A FieldArray of the given ints."""
    return FieldArray(_mod(np.asarray(values, dtype=object)), deg)


def random_array(rng: Any, shape: tuple[int, ...]) -> FieldArray:
    """Uniform random field elements: a fresh variable per entry (degree 1)."""
    values = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        values[index] = rng.randrange(P)
    return FieldArray(values, FRESH)


__all__ = ["Degenerate", "ExactScalar", "FieldArray", "field_array", "namespace", "random_array"]
