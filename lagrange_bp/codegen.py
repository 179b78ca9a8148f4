"""Step 6: NumPy kernels generated from the generic-layer equations (DESIGN §4 codegen).

Each generic equation of ``general.derive_general`` is instantiated for one layer, moved to the
NumPy layout (samples are rows: the array of X^k is X^kᵀ, shape (B, n_k)) by SymPy's transpose,
and printed as in-place NumPy statements into preallocated buffers. Stock ``lambdify`` cannot
print ``ElementwiseApplyFunction`` or ``OneMatrix`` of symbolic size and allocates a temporary
for every node (DESIGN §5); this printer writes ``out=`` calls instead. The statements of all
layers are joined into one function per kernel and compiled with ``exec``, as lambdify does, with
the source registered in ``linecache`` so tracebacks and ``Kernel.source`` show it.

Printing rules that differ from the plain formula, each mathematically the same function:
sigmoid(u) = ½ tanh(u/2) + ½ (no overflow), softplus(u) = logaddexp(0, u), softmax by rows after
subtracting the row maximum, and −Σ y log softmax(z) as −Σ y (z − logsumexp(z)).
"""

from __future__ import annotations

import itertools
import linecache
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
from sympy import HadamardProduct, MatAdd, MatMul, MatrixSymbol, OneMatrix, Transpose
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .functions import relu, sigmoid, softplus, step

#: elementwise SymPy functions → NumPy statements; {i} the input array, {o} the output
UFUNCS: dict[Any, list[str]] = {
    sp.tanh: ["np.tanh({i}, out={o})"],
    sp.exp: ["np.exp({i}, out={o})"],
    sp.log: ["np.log({i}, out={o})"],
    sigmoid: [
        "np.multiply({i}, 0.5, out={o})",
        "np.tanh({o}, out={o})",
        "np.multiply({o}, 0.5, out={o})",
        "np.add({o}, 0.5, out={o})",
    ],
    softplus: ["np.logaddexp(0.0, {i}, out={o})"],
    relu: ["np.maximum({i}, 0.0, out={o})"],
    step: ["np.heaviside({i}, 0.0, out={o})"],
    sp.Abs: ["np.abs({i}, out={o})"],
    sp.sin: ["np.sin({i}, out={o})"],
    sp.cos: ["np.cos({i}, out={o})"],
    sp.tan: ["np.tan({i}, out={o})"],
    sp.atan: ["np.arctan({i}, out={o})"],
    sp.sinh: ["np.sinh({i}, out={o})"],
    sp.cosh: ["np.cosh({i}, out={o})"],
    sp.sign: ["np.sign({i}, out={o})"],
}


@dataclass
class Buffers:
    """Named preallocated arrays: shapes are tuples of ints or of 'B' (the batch size)."""

    shapes: dict[str, tuple[int | str, ...]] = field(default_factory=dict)
    external: dict[str, tuple[int | str, ...]] = field(default_factory=dict)  # params, inputs
    counter: itertools.count = field(default_factory=itertools.count)

    def shape_of(self, name: str) -> tuple[int | str, ...]:
        return self.shapes.get(name) or self.external[name]

    def new(self, shape: tuple[int | str, ...], prefix: str = "t") -> str:
        name = f"{prefix}{next(self.counter)}"
        self.shapes[name] = shape
        return name

    def declare(self, name: str, shape: tuple[int | str, ...]) -> str:
        self.shapes.setdefault(name, shape)
        return name


class Emitter:
    """Print rows-layout matrix expressions as in-place NumPy statements."""

    def __init__(
        self, names: dict[sp.Basic, str], buffers: Buffers, sizes: dict[sp.Symbol, int]
    ) -> None:
        self.names = names  # matrix symbol (rows layout) → array expression in the code
        self.arrays: set[sp.Symbol] = set()  # scalar stand-ins of arrays in elementwise code
        self.temps: set[sp.Symbol] = set()  # arrays that are this emitter's own temporaries
        self.buffers = buffers
        self.sizes = sizes
        self.lines: list[str] = []

    def shape(self, e: sp.MatrixExpr) -> tuple[int | str, ...]:
        return tuple(
            "B"
            if d == sp.Symbol("B", integer=True, positive=True)
            else int(sp.sympify(d).subs(self.sizes))
            for d in e.shape
        )

    # --- matrix level -------------------------------------------------------------------
    def assign(self, out: str, e: sp.MatrixExpr) -> None:
        """Emit statements that leave the value of ``e`` in the array ``out``."""
        if isinstance(e, MatMul):
            coeff, rest = e.as_coeff_mmul()
            if self._is_product(rest):
                self._matmul(out, rest)
                if coeff != 1:
                    self.lines.append(f"np.multiply({out}, {_num(coeff)}, out={out})")
                return
        if isinstance(e, MatAdd):  # a product plus elementwise terms: product into out first
            products = [a for a in e.args if self._is_product(a) and not _is_broadcast(a)]
            if len(products) == 1:
                rest = sp.Add(*[self.to_scalar(a, out) for a in e.args if a is not products[0]])
                if sp.Symbol(out) not in rest.free_symbols:
                    self.assign(out, products[0])
                    self.elementwise(out, self.array(out) + rest)
                    return
        self.elementwise(out, self.to_scalar(e, out))

    @staticmethod
    def _is_product(e: sp.Basic) -> bool:
        return isinstance(e, MatMul) and sum(1 for a in e.args if isinstance(a, sp.MatrixExpr)) >= 2

    def _matmul(self, out: str, e: MatMul) -> None:
        mats = [a for a in e.args if isinstance(a, sp.MatrixExpr)]
        if len(mats) == 2 and isinstance(mats[0], OneMatrix) and mats[0].shape[0] == 1:
            self.lines.append(f"np.sum({self.operand(mats[1])}, axis=0, out={out})")  # 1ᵀ M
            return
        if len(mats) == 2 and isinstance(mats[1], OneMatrix) and mats[1].shape[1] == 1:
            self.lines.append(f"np.sum({self.operand(mats[0])}, axis=1, out={out})")  # M 1
            return
        if _is_row_sum(e):
            self.lines.append(f"np.sum({self.operand(mats[0])}, axis=1, keepdims=True, out={out})")
            return
        if len(mats) != 2:
            raise NotImplementedError(f"matrix product of {len(mats)} factors: {e}")
        self.lines.append(f"np.matmul({self.operand(mats[0])}, {self.operand(mats[1])}, out={out})")

    def operand(self, e: sp.MatrixExpr) -> str:
        """An array expression for e: a named array, its .T, or a buffer computed now."""
        if e in self.names:
            return self.names[e]
        if isinstance(e, Transpose) and e.arg in self.names:
            return f"{self.names[e.arg]}.T"
        shape = self.shape(e)
        if _is_row_sum(e):
            shape = (shape[0], 1)
        elif shape[0] == 1:
            shape = (shape[1],)
        name = self.buffers.new(shape)
        self.temps.add(sp.Symbol(name))
        self.assign(name, e)
        self.names[e] = name
        return name

    # --- elementwise level --------------------------------------------------------------
    def to_scalar(self, e: sp.Basic, out: str) -> sp.Expr:
        """The elementwise expression as a scalar SymPy expression over array-name symbols."""
        if isinstance(e, MatAdd):
            return sp.Add(*[self.to_scalar(a, out) for a in e.args])
        if isinstance(e, HadamardProduct):
            return sp.Mul(*[self.to_scalar(a, out) for a in e.args])
        if isinstance(e, ElementwiseApplyFunction):
            (v,), body = e.function.variables, e.function.expr
            return body.xreplace({v: self.to_scalar(e.expr, out)})
        if type(e).__name__ == "ElementwisePair":
            (u, v), body = e.function.variables, e.function.expr
            return body.xreplace(
                {u: self.to_scalar(e.args[1], out), v: self.to_scalar(e.args[2], out)}
            )
        if isinstance(e, MatMul):
            coeff, rest = e.as_coeff_mmul()
            mats = list(rest.args) if isinstance(rest, MatMul) else [rest]
            if len(mats) == 2 and isinstance(mats[0], OneMatrix) and mats[0].shape[1] == 1:
                return coeff * self.to_scalar(mats[1], out)  # 1 bᵀ: broadcast the row b
            if coeff != 1:
                inner = mats[0] if len(mats) == 1 else MatMul(*mats)
                return coeff * self.to_scalar(inner, out)
        return self.array(self.operand(e))

    def array(self, name: str) -> sp.Symbol:
        sym = sp.Symbol(name)
        self.arrays.add(sym)
        return sym

    def is_scalar(self, e: sp.Expr) -> bool:
        return not (e.free_symbols & self.arrays)

    def leaf(self, e: sp.Expr) -> str:
        """An operand that needs no statement: an array name or a scalar."""
        return str(e) if e in self.arrays else _num(e)

    def is_leaf(self, e: sp.Expr) -> bool:
        return e in self.arrays or self.is_scalar(e)

    def elementwise(self, out: str, e: sp.Expr) -> None:
        """In-place evaluation of a scalar expression over arrays into ``out``."""
        if e == sp.Symbol(out):
            return
        if self.is_leaf(e):
            self.lines.append(f"np.copyto({out}, {self.leaf(e)})")
        elif e.is_Add:
            self._add(out, e)
        elif e.is_Mul:
            self._mul(out, e)
        elif e.is_Pow and e.exp == 2:
            self._unary(out, e.base, "np.square({i}, out={o})")
        elif e.is_Pow and e.exp == -1:
            self._unary(out, e.base, "np.divide(1.0, {i}, out={o})")
        elif e.is_Pow and e.exp == sp.S.Half:
            self._unary(out, e.base, "np.sqrt({i}, out={o})")
        elif e.is_Pow and self.is_scalar(e.exp):
            self._unary(out, e.base, "np.power({i}, " + _num(e.exp) + ", out={o})")
        elif e.is_Pow and self.is_scalar(e.base):
            self._unary(out, e.exp, "np.power(" + _num(e.base) + ", {i}, out={o})")
        elif isinstance(e, sp.Function) and type(e) in UFUNCS and len(e.args) == 1:
            for n, t in enumerate(UFUNCS[type(e)]):
                self._unary(out, e.args[0], t) if n == 0 else self.lines.append(
                    t.format(i=out, o=out)
                )
        else:
            raise NotImplementedError(f"no in-place NumPy printing for {e}")

    def _unary(self, out: str, arg: sp.Expr, template: str) -> None:
        if arg in self.arrays:
            self.lines.append(template.format(i=arg, o=out))
        else:
            self.elementwise(out, arg)
            self.lines.append(template.format(i=out, o=out))

    def _temp(self, e: sp.Expr, like: str) -> str:
        """An operand for e: a leaf, or a temporary buffer shaped like ``like``."""
        if self.is_leaf(e):
            return self.leaf(e)
        tmp = self.buffers.new(self.buffers.shape_of(like))
        self.arrays.add(sp.Symbol(tmp))
        self.elementwise(tmp, e)
        return tmp

    def _add(self, out: str, e: sp.Expr) -> None:
        me = sp.Symbol(out)
        terms = list(sp.Add.make_args(e))
        if me in terms:  # in-place update: out += rest
            rest = sp.Add(*[t for t in terms if t != me])
            parts = sp.Mul.make_args(rest)
            core = [f for f in parts if not self.is_scalar(f)]
            if len(core) == 1 and core[0] in self.temps:  # c·temp: scale the temp in place
                coeff = sp.Mul(*[f for f in parts if self.is_scalar(f)])
                self.lines.append(f"np.multiply({core[0]}, {_num(coeff)}, out={core[0]})")
                rest = core[0]
            self.lines.append(f"np.add({out}, {self._temp(rest, out)}, out={out})")
            return
        neg = [-t for t in terms if t.could_extract_minus_sign()]
        pos = [t for t in terms if not t.could_extract_minus_sign()]
        first = next((t for t in pos if not self.is_leaf(t)), None)
        if first is None and pos and neg:  # a − b − …: start with a subtraction
            a, b = pos.pop(0), neg.pop(0)
            if self.is_leaf(b):
                self.lines.append(f"np.subtract({self.leaf(a)}, {self.leaf(b)}, out={out})")
            else:
                self.elementwise(out, b)
                self.lines.append(f"np.subtract({self.leaf(a)}, {out}, out={out})")
        elif first is None and not pos:  # −(a + …)
            self.elementwise(out, sp.Add(*neg))
            self.lines.append(f"np.negative({out}, out={out})")
            neg = []
        else:
            first = first if first is not None else pos[0]
            pos.remove(first)
            self.elementwise(out, first)
        for t in pos:
            self.lines.append(f"np.add({out}, {self._temp(t, out)}, out={out})")
        for t in neg:
            self.lines.append(f"np.subtract({out}, {self._temp(t, out)}, out={out})")

    def _mul(self, out: str, e: sp.Expr) -> None:
        me = sp.Symbol(out)
        factors = list(sp.Mul.make_args(e))
        coeff = sp.Mul(*[f for f in factors if self.is_scalar(f)])
        arrays = [f for f in factors if not self.is_scalar(f)]
        if me in arrays:  # in place: out *= rest
            arrays.remove(me)
            rest = sp.Mul(*arrays) * coeff
            self.lines.append(f"np.multiply({out}, {self._temp(rest, out)}, out={out})")
            return
        compound = [f for f in arrays if f not in self.arrays]
        if compound:
            self.elementwise(out, compound[0])
            arrays.remove(compound[0])
        elif len(arrays) >= 2:
            self.lines.append(f"np.multiply({arrays[0]}, {arrays[1]}, out={out})")
            arrays = arrays[2:]
        else:
            self.lines.append(f"np.multiply({arrays[0]}, {_num(coeff)}, out={out})")
            arrays, coeff = [], sp.S.One
        for f in arrays:
            self.lines.append(f"np.multiply({out}, {self._temp(f, out)}, out={out})")
        if coeff != 1:
            self.lines.append(f"np.multiply({out}, {_num(coeff)}, out={out})")


def _num(x: sp.Basic) -> str:
    """A scalar in the generated code: a float literal, or a Python expression in B, eta."""
    x = sp.sympify(x)
    if x.is_number:  # π, √2, exp(1), … as float literals
        value = complex(x)
        if value.imag != 0 or not np.isfinite(value.real):
            raise ValueError(f"constant {x} is not a finite real number")
        return repr(value.real)
    return f"({sp.pycode(x)})"


def _is_broadcast(e: sp.Basic) -> bool:
    """1 bᵀ: a row vector repeated over the batch."""
    return isinstance(e, MatMul) and isinstance(e.args[0], OneMatrix) and e.args[0].shape[1] == 1


def _is_row_sum(e: sp.Basic) -> bool:
    """M 1 1ᵀ (square ones on the right): each row's sum, broadcast along the row."""
    return (
        isinstance(e, MatMul)
        and isinstance(e.args[-1], OneMatrix)
        and e.args[-1].shape[0] == e.args[-1].shape[1]
    )


_COUNTER = itertools.count()


def compile_source(name: str, source: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """exec the generated source as lambdify does, registering it for tracebacks."""
    filename = f"<lagrange_bp-generated-{name}-{next(_COUNTER)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def row_symbol(M: MatrixSymbol, name: str) -> MatrixSymbol:
    """The rows-layout array of a column-layout matrix symbol, as a MatrixSymbol."""
    return MatrixSymbol(name, M.shape[1], M.shape[0])
