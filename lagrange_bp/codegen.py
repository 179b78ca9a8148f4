"""Step 6: the kernel printer — matrix equations (samples as rows) as in-place NumPy statements.

``KernelPrinter`` is a SymPy ``Printer`` with one ``_print_<Node>`` method per node type, as
``sympy.printing.numpy`` has; each writes its node's value into the array named ``out`` with
NumPy's ``out=`` ufunc calls, into buffers preallocated once per batch size (stock ``lambdify``
cannot print ``ElementwiseApplyFunction`` or a ``OneMatrix`` of symbolic size, and allocates a
temporary for every node; CONVENTIONS §4). Matrix nodes: products (``np.matmul``), sums over the
batch or a sample (1ᵀ M, M 1 1ᵀ), softmax and log-softmax by samples. Entrywise nodes (⊙,
σ(·), sums, powers) are turned into one scalar expression over array names, common
subexpressions are computed once (``sympy.cse``), and scalar functions are printed from the
one table ``primitives.NUMPY_FORMS``. Every statement is written by one of three methods
(``call``, ``fill``, ``copy``); ``TorchPrinter`` overrides them to print the same nodes as
PyTorch expressions (``TORCH_CALLS``, ``primitives.TORCH_FORMS``) for ``torch_export``.
``compile_source`` execs a function as ``lambdify`` does and frees its ``linecache`` entry
when the function is released.
"""

from __future__ import annotations

import itertools
import linecache
import math
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.special
import sympy as sp
from sympy import HadamardProduct, MatAdd, MatMul, OneMatrix, Transpose
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.printing.printer import Printer

from .matrices import BATCH, Entrywise
from .primitives import NUMPY_FORMS, TORCH_FORMS

Shape = tuple[int | str, ...]


@dataclass
class Buffers:
    """Named preallocated arrays: shapes are tuples of ints or of 'B' (the batch size)."""

    shapes: dict[str, Shape] = field(default_factory=dict)
    external: dict[str, Shape] = field(default_factory=dict)  # params and data, not allocated
    aliases: dict[str, str] = field(default_factory=dict)  # a name bound to another's array
    counter: Iterator[int] = field(default_factory=itertools.count)

    def shape_of(self, name: str) -> Shape:
        base = name.removesuffix(".T")
        base = self.aliases.get(base, base)
        shape = self.shapes.get(base) or self.external[base]
        return shape[::-1] if name.endswith(".T") else shape

    def new(self, shape: Shape, prefix: str = "t") -> str:
        name = f"{prefix}{next(self.counter)}"
        self.shapes[name] = shape
        return name

    def declare(self, name: str, shape: Shape) -> str:
        self.shapes.setdefault(name, shape)
        return name


def _ufunc(name: str) -> str:
    return name.replace("numpy.", "np.", 1)


class KernelPrinter(Printer):
    """Print matrix expressions (samples as rows) as in-place NumPy statements into buffers.

    ``names`` maps each matrix symbol (or its transpose) to the array that holds it;
    ``sizes`` gives the integer value of every symbolic width. ``assign(out, expr)`` returns
    the statements that leave ``expr`` in the array ``out``.
    """

    printmethod = "_kernelcode"
    folds_sums = True  # a sum's coefficient is the summing vector's value (``sum``)

    def __init__(
        self, names: dict[sp.Basic, str], buffers: Buffers, sizes: dict[sp.Symbol, int]
    ) -> None:
        super().__init__()
        self.names = names
        self.buffers = buffers
        self.sizes = sizes
        self.lines: list[str] = []
        self.arrays: set[sp.Symbol] = set()  # array names inside scalar expressions
        self.temps: set[str] = set()  # the printer's own temporaries (free to overwrite)
        self.constants: dict[float, sp.Expr] = {}  # each printed float literal's exact value
        self.scratch: list[str] = []  # names to use, in order, for the next temporaries
        #: z → the buffers of each sample's max and Σ e^{z − max} of the softmax printed from z
        self.softmax_rows: dict[str, tuple[str, str]] = {}
        #: how many expressions that read their out were computed in a temporary and copied
        self.copies_back = 0

    def assign(self, out: str, expr: sp.Basic, scratch: tuple[str, ...] = ()) -> list[str]:
        """The statements that compute ``expr`` into the array ``out``."""
        start, self.scratch = len(self.lines), list(scratch)
        self._print(expr, out=out)
        return self.lines[start:]

    def total(self, out: str, expr: sp.Basic) -> tuple[list[str], str]:
        """The statements and the code of Σ over every entry of ``expr`` (a loss's entrywise
        terms): ``c * np.vdot(U, V)`` when it is c U ⊙ V or c U² with U, V of out's shape
        (one BLAS dot: no pass for the product, none for the sum), else ``np.add.reduce``
        over ``expr`` computed into ``out``. (A full-data float32 loss over millions of
        entries is a few times less accurate as a dot than as a pairwise sum, ``sum``.)"""
        start = len(self.lines)
        e = self.to_scalar(expr)
        factors = sp.Mul.make_args(e)
        coeff = sp.Mul(*[f for f in factors if self.is_scalar(f)])
        arrays = [f for f in factors if not self.is_scalar(f)]
        if len(arrays) == 1 and arrays[0].is_Pow and arrays[0].exp == 2:
            arrays = [arrays[0].base, arrays[0].base]
        shape = self.buffers.shape_of(out)
        if len(arrays) == 2 and all(
            self.leaf(a) is None or self.buffers.shape_of(str(a)) == shape for a in arrays
        ):
            codes: list[str] = []
            for a in arrays if arrays[0] != arrays[1] else arrays[:1]:
                code = self.leaf(a)
                if code is None and out not in codes:  # the first one computed into out
                    self._entrywise(out, a)
                    code = out
                codes.append(code if code is not None else self._operand(a, out))
            dot = f"np.vdot({codes[0]}, {codes[-1]})"
            if coeff != 1:
                dot = f"-{dot}" if coeff == -1 else f"{self.scalar(coeff)} * {dot}"
            return self.lines[start:], dot
        self._entrywise(out, e)
        return self.lines[start:], f"np.add.reduce({out}, axis=None)"

    def emit(self, line: str) -> None:
        self.lines.append(line)

    # --- the statements: every one is written here (a backend overrides these three) -------
    def call(self, fn: str, *args: str, out: str, **options: str) -> None:
        """fn(args, options, out=out): fn is a NumPy (or SciPy) function's qualified name."""
        opts = [f"{key}={value}" for key, value in options.items()]
        self.emit(f"{fn}({', '.join([*args, *opts, f'out={out}'])})")

    def fill(self, out: str, value: str) -> None:
        """Every entry of out ← the scalar ``value`` (a literal or an expression in B, eta)."""
        self.emit(f"np.copyto({out}, {value})")

    def copy(self, out: str, name: str) -> None:
        """out ← the array ``name``."""
        self.emit(f"np.copyto({out}, {name})")

    # --- shapes and operands ---------------------------------------------------------------
    def shape(self, e: sp.MatrixExpr) -> Shape:
        """The NumPy shape of e's value: a row 1×n is (n,), a sum over samples keeps a 1."""
        rows, cols = ("B" if d == BATCH else int(sp.sympify(d).subs(self.sizes)) for d in e.shape)
        if _reduction(e) == "sample":
            return (rows, 1)
        return (cols,) if rows == 1 else (rows, cols)

    def _dim(self, d: sp.Expr) -> int | str:
        if d == BATCH:
            return "B"
        value = sp.sympify(d).subs(self.sizes)
        return int(value) if value.is_Integer else "n"

    def temp(self, shape: Shape) -> str:
        name = self.scratch.pop(0) if self.scratch else self.buffers.new(shape)
        self.buffers.declare(name, shape)
        self.temps.add(name)
        return name

    def operand(self, e: sp.MatrixExpr) -> str:
        """An array name for a matrix: its own, its transpose, or a temporary computed now."""
        if e in self.names:
            return self.names[e]
        if isinstance(e, Transpose) and e.arg in self.names:
            return f"{self.names[e.arg]}.T"
        out = self.temp(self.shape(e))
        self._print(e, out=out)
        return out

    def array(self, name: str) -> sp.Symbol:
        sym = sp.Symbol(name)
        self.arrays.add(sym)
        return sym

    def is_scalar(self, e: sp.Expr) -> bool:
        return not (e.free_symbols & self.arrays)

    def leaf(self, e: sp.Expr) -> str | None:
        """The code of an operand that needs no statement: an array name or a scalar."""
        if e in self.arrays:
            return str(e)
        return self.scalar(e) if self.is_scalar(e) else None

    def scalar(self, e: sp.Expr) -> str:
        """A scalar: a float literal, or a Python expression in B and eta (a float literal
        times B and eta's powers). Each literal's exact value is kept in ``constants``, so
        that the source can be run exactly (``exact_numpy``)."""
        e = sp.sympify(e)
        if e.is_number:  # π, √2, 1/3, … as float literals
            value = complex(sp.N(e, 30))
            if value.imag != 0 or not math.isfinite(value.real):
                raise ValueError(f"constant {e} is not a finite real number")
            self.constants.setdefault(value.real, e)
            return repr(value.real)
        if e.is_Symbol:
            return str(e.name)
        number, symbols = e.as_independent(*e.free_symbols, as_Add=False)
        top, bottom = symbols.as_numer_denom()
        top_text = f"({sp.sstr(top)})" if top.is_Add else sp.sstr(top)
        under = f"({sp.sstr(bottom)})" if bottom.is_Add or bottom.is_Mul else sp.sstr(bottom)
        rest = "" if bottom == 1 else f"/{under}"
        if number == 1 or number == -1:
            text = "1" if top == 1 else top_text
            return f"({'-' if number == -1 else ''}{text}{rest})"
        text = "" if top == 1 else f"*{top_text}"
        return f"({self.scalar(number)}{text}{rest})"

    # --- matrix nodes ----------------------------------------------------------------------
    def _print_MatMul(self, e: MatMul, out: str) -> None:
        coeff, rest = e.as_coeff_mmul()
        mats = [a for a in rest.args if isinstance(a, sp.MatrixExpr)]
        if len(mats) < 2 or _reduction(rest) == "broadcast":
            self._entrywise(out, self.to_scalar(e))
            return
        kind = _reduction(rest)
        if kind == "batch":  # c 1ᵀ M: the sum over samples, shape (n,)
            self.sum(kind, self.operand(mats[1]), coeff, out)
            return
        if kind == "sample":  # c M 1 1ᵀ: each sample's sum, shape (B, 1)
            self.sum(kind, self.operand(mats[0]), coeff, out)
            return
        if len(mats) != 2:
            raise NotImplementedError(f"matrix product of {len(mats)} factors: {e}")
        self.call("np.matmul", self.operand(mats[0]), self.operand(mats[1]), out=out)
        if coeff != 1:
            self._entrywise(out, coeff * self.array(out))

    def sum(self, kind: str, m: str, coeff: sp.Expr, out: str) -> None:
        """c 1ᵀ M (kind "batch": over the samples, shape (n,)) or c M 1 (kind "sample": each
        sample's sum, shape (B, 1)) as one BLAS product with a vector that holds c: NumPy's
        add.reduce loops row by row (2-4× slower at a batch of 200), and c costs no pass of
        its own. The vector is filled here, before each use: no buffer's contents are
        trusted (``verify(model)`` runs the kernels on buffers of random values). BLAS adds
        in another order than NumPy's pairwise sum: the same to rounding at these sizes, less
        accurate over millions of float32 entries (relative 5e-7 at 10⁶ against 4e-8)."""
        rows, cols = self.buffers.shape_of(m)
        if kind == "batch":
            vector = self.buffers.declare(f"sum_{rows}", (rows,))
            operands = (vector, m)
        else:
            vector = self.buffers.declare(f"sum_{cols}", (cols, 1))
            operands = (m, vector)
        self.fill(vector, self.scalar(coeff))
        self.call("np.matmul", *operands, out=out)

    def _print_MatAdd(self, e: MatAdd, out: str) -> None:
        """A product plus entrywise terms: the product straight into out, then the rest."""
        products = [a for a in e.args if is_product(a)]
        if len(products) == 1:
            others = [a for a in e.args if a is not products[0]]
            rest = sp.Add(*[self.to_scalar(a) for a in others])
            if self.array(out) not in rest.free_symbols:
                self._print(products[0], out=out)
                self._entrywise(out, self.array(out) + rest)
                return
        self._entrywise(out, self.to_scalar(e))

    def _print_Softmax(self, e: Any, out: str) -> None:
        """e^{z − max z} / Σ e^{z − max z} by samples: no overflow for any finite z. Each
        sample's max and sum stay in their buffers for a log-softmax of the same z later."""
        z, r = self.operand(e.arg), self._sample_buffer(out)
        m = self._row_max(z, out)
        self.call("np.subtract", z, m, out=out)
        self.call("np.exp", out, out=out)
        self.sum("sample", out, sp.S.One, r)
        self.call("np.divide", out, r, out=out)
        self.softmax_rows[z] = (m, r)

    def _print_LogSoftmax(self, e: Any, out: str) -> None:
        """(z − max z) − log Σ e^{z − max z} by samples: finite for any finite z; after a
        softmax of the same z, from its max and sum: z − (max z + log Σ e^{z − max z})."""
        z, r = self.operand(e.arg), self._sample_buffer(out)
        if z in self.softmax_rows:
            m, total = self.softmax_rows[z]
            self.call("np.log", total, out=r)
            self.call("np.add", r, m, out=r)
            self.call("np.subtract", z, r, out=out)
            return
        e_ = self.temp(self.buffers.shape_of(out))
        self.call("np.subtract", z, self._row_max(z, out), out=out)
        self.call("np.exp", out, out=e_)
        self.sum("sample", e_, sp.S.One, r)
        self.call("np.log", r, out=r)
        self.call("np.subtract", out, r, out=out)

    def _row_max(self, z: str, like: str) -> str:
        """Each sample's max of z, in a (1, B) buffer named after ``like``; returned as the
        (B, 1) column that the statements read. Taken over the columns of zᵀ (copied into
        a buffer): NumPy's max along each row of a (B, n) array loops row by row, 3× slower
        at a batch of 200 and 10 classes."""
        samples, n = self.buffers.shape_of(z)
        zt = self.buffers.declare(f"zt_{like}", (n, samples))
        m = self.buffers.declare(f"max_{like}", (1, samples))
        self.copy(zt, f"{z}.T")
        self.call("np.maximum.reduce", zt, axis="0", keepdims="True", out=m)
        return f"{m}.T"

    def _sample_buffer(self, like: str) -> str:
        """A (B, 1) buffer for each sample's sum, named after the layer's array (a prefix:
        a graph node's name may end in anything)."""
        name = f"rows_{like}"
        self.buffers.declare(name, (self.buffers.shape_of(like)[0], 1))
        return name

    def _print_MatrixExpr(self, e: sp.MatrixExpr, out: str) -> None:
        """⊙, σ(·), entrywise functions, named arrays: one entrywise expression."""
        self._entrywise(out, self.to_scalar(e))

    def _print_Basic(self, e: sp.Basic, out: str) -> None:
        raise NotImplementedError(f"no NumPy printing for {type(e).__name__}: {e}")

    # --- matrices to scalar expressions over array names ----------------------------------
    def to_scalar(self, e: sp.Basic) -> sp.Expr:
        """The entrywise expression of e over array names (Symbols); other matrix nodes are
        computed into temporaries first."""
        if e in self.names:
            return self.array(self.names[e])
        if isinstance(e, MatAdd):
            return sp.Add(*[self.to_scalar(a) for a in e.args])
        if isinstance(e, HadamardProduct):
            return sp.Mul(*[self.to_scalar(a) for a in e.args])
        if isinstance(e, ElementwiseApplyFunction):
            (v,), body = e.function.variables, e.function.expr
            return body.xreplace({v: self.to_scalar(e.expr)})
        if isinstance(e, Entrywise):
            values = [self.to_scalar(m) for m in e.matrices]
            return e.function.expr.xreplace(dict(zip(e.function.variables, values)))
        if isinstance(e, OneMatrix):
            return sp.S.One
        if isinstance(e, MatMul):
            coeff, rest = e.as_coeff_mmul()
            mats = list(rest.args) if isinstance(rest, MatMul) else [rest]
            if _reduction(rest) == "broadcast":  # 1 bᵀ: the row b, repeated by broadcasting
                return coeff * self.to_scalar(mats[1])
            if coeff != 1 and not (self.folds_sums and _reduction(rest) in ("batch", "sample")):
                return coeff * self.to_scalar(mats[0] if len(mats) == 1 else MatMul(*mats))
        return self.array(self.operand(e))  # c 1ᵀ M: c goes into the summing vector (``sum``)

    # --- entrywise expressions -------------------------------------------------------------
    def _entrywise(self, out: str, e: sp.Expr) -> None:
        """In-place evaluation of an entrywise expression into out, common parts once."""
        me = self.array(out)
        if e == me:
            return
        if self.is_scalar(e):
            self.fill(out, self.scalar(e))
            return
        if me in e.free_symbols and not _in_place_safe(e, me, self.is_scalar):
            self.copies_back += 1
            tmp = self.temp(self.buffers.shape_of(out))
            self._entrywise(tmp, e)
            self.copy(out, tmp)
            return
        replacements, (reduced,) = sp.cse([e], symbols=_cse_symbols(), order="none")
        done: dict[sp.Symbol, sp.Expr] = {}
        for sym, sub in replacements:
            sub = sub.xreplace(done)
            if self.is_scalar(sub):
                done[sym] = sub
                continue
            tmp = self.temp(self.buffers.shape_of(out))
            self._entrywise(tmp, sub)
            done[sym] = self.array(tmp)
        self._print(reduced.xreplace(done), out=out)

    def _compute(self, out: str, e: sp.Expr) -> None:
        """e into out: an operand copied, anything else printed by its node's method."""
        if e == self.array(out):
            return
        code = self.leaf(e)
        if code is not None and self.is_scalar(e):
            self.fill(out, code)
        elif code is not None:
            self.copy(out, code)
        else:
            self._print(e, out=out)

    def _operand(self, e: sp.Expr, like: str) -> str:
        """An operand for e: a leaf, or a temporary shaped like ``like``."""
        code = self.leaf(e)
        if code is not None:
            return code
        tmp = self.temp(self.buffers.shape_of(like))
        self._entrywise(tmp, e)
        return tmp

    def _unary(self, out: str, arg: sp.Expr, call: Callable[[str], None]) -> None:
        """arg into out unless it is a leaf, then ``call`` with the leaf (or out)."""
        code = self.leaf(arg)
        if code is None:
            self._compute(out, arg)
            code = out
        call(code)

    def _print_Symbol(self, e: sp.Symbol, out: str) -> None:
        self._compute(out, e)

    def _print_Number(self, e: sp.Number, out: str) -> None:
        self.fill(out, self.scalar(e))

    def _print_NumberSymbol(self, e: sp.Expr, out: str) -> None:
        self.fill(out, self.scalar(e))

    def _print_Add(self, e: sp.Add, out: str) -> None:
        me = self.array(out)
        terms = list(sp.Add.make_args(e))
        if me in terms:  # out ← out + rest
            rest = sp.Add(*[t for t in terms if t != me])
            self._accumulate(out, rest)
            return
        neg = [-t for t in terms if t.could_extract_minus_sign()]
        pos = [t for t in terms if not t.could_extract_minus_sign()]
        first = next((t for t in pos if self.leaf(t) is None), None)
        if first is None and pos and neg:  # a − b − …: start with a subtraction
            a, b = pos.pop(0), neg.pop(0)
            if self.leaf(b) is None and me not in b.free_symbols:
                self._compute(out, b)  # b into out first: no temporary
                self.call("np.subtract", str(self.leaf(a)), out, out=out)
            else:
                self.call("np.subtract", str(self.leaf(a)), self._operand(b, out), out=out)
        elif not pos:  # −(a + …)
            self._compute(out, sp.Add(*neg))
            self.call("np.negative", out, out=out)
            neg = []
        else:
            first = first if first is not None else pos[0]
            pos.remove(first)
            self._compute(out, first)
        for t in pos:
            self.call("np.add", out, self._operand(t, out), out=out)
        for t in neg:
            self.call("np.subtract", out, self._operand(t, out), out=out)

    def _accumulate(self, out: str, rest: sp.Expr) -> None:
        """out ← out + rest; a scaled temporary is scaled in place (W ← W + η·G)."""
        sign = "subtract" if rest.could_extract_minus_sign() else "add"
        rest = -rest if sign == "subtract" else rest
        factors = sp.Mul.make_args(rest)
        arrays = [f for f in factors if not self.is_scalar(f)]
        if len(arrays) == 1 and str(arrays[0]) in self.temps:
            coeff = sp.Mul(*[f for f in factors if self.is_scalar(f)])
            self._scale(str(arrays[0]), coeff)
            rest = arrays[0]
        self.call(f"np.{sign}", out, self._operand(rest, out), out=out)

    def _scale(self, out: str, coeff: sp.Expr) -> None:
        if coeff == -1:
            self.call("np.negative", out, out=out)
        elif coeff.is_Pow and coeff.exp == -1:
            self.call("np.divide", out, self.scalar(coeff.base), out=out)
        elif coeff != 1:
            self.call("np.multiply", out, self.scalar(coeff), out=out)

    def _print_Mul(self, e: sp.Mul, out: str) -> None:
        me = self.array(out)
        factors = list(sp.Mul.make_args(e))
        coeff = sp.Mul(*[f for f in factors if self.is_scalar(f)])
        arrays = [f for f in factors if not self.is_scalar(f)]
        divisors = [1 / f for f in arrays if f.is_Pow and f.exp.is_negative]
        arrays = [f for f in arrays if not (f.is_Pow and f.exp.is_negative)]
        reader = next((f for f in arrays if f != me and f.has(me)), None)
        if me in arrays:  # out ← out · rest
            arrays.remove(me)
        elif len(arrays) == 1 and not divisors and self.leaf(arrays[0]) is not None:
            a = str(self.leaf(arrays[0]))  # c · A in one call
            if coeff == -1:
                self.call("np.negative", a, out=out)
            else:
                self.call("np.multiply", a, self.scalar(coeff), out=out)
            return
        elif not arrays:  # c / D
            d = divisors.pop(0)
            self.call("np.divide", self.scalar(coeff), self._operand(d, out), out=out)
            coeff = sp.S.One
        elif (
            reader is None
            and len(arrays) >= 2
            and all(self.leaf(f) is not None for f in arrays[:2])
        ):
            self.call("np.multiply", str(arrays[0]), str(arrays[1]), out=out)
            arrays = arrays[2:]
        else:  # the factor that reads out (``_in_place_safe``) first, before out is written
            first = reader or next((f for f in arrays if self.leaf(f) is None), arrays[0])
            arrays.remove(first)
            self._compute(out, first)
        for f in arrays:
            self.call("np.multiply", out, self._operand(f, out), out=out)
        for d in divisors:
            self.call("np.divide", out, self._operand(d, out), out=out)
        self._scale(out, coeff)

    def _print_Pow(self, e: sp.Pow, out: str) -> None:
        base, exp = e.base, e.exp
        if self.is_scalar(exp):
            if exp == 2:
                self._unary(out, base, lambda a: self.call("np.square", a, out=out))
            elif exp == sp.S.Half:
                self._unary(out, base, lambda a: self.call("np.sqrt", a, out=out))
            elif exp == -1:
                self._unary(out, base, lambda a: self.call("np.divide", "1.0", a, out=out))
            else:
                p = self.scalar(exp)
                self._unary(out, base, lambda a: self.call("np.power", a, p, out=out))
        elif self.is_scalar(base):
            c = self.scalar(base)
            self._unary(out, exp, lambda a: self.call("np.power", c, a, out=out))
        else:
            b, x = self._operand(base, out), self._operand(exp, out)
            self.call("np.power", b, x, out=out)

    def _print_Function(self, e: sp.Function, out: str) -> None:
        if type(e) not in NUMPY_FORMS or len(e.args) != 1:
            raise NotImplementedError(f"no NumPy form for {type(e).__name__}")
        name, before, after = NUMPY_FORMS[type(e)]
        self._unary(out, e.args[0], lambda a: self.call(_ufunc(name), *before, a, *after, out=out))


#: a NumPy statement → its PyTorch expression in the same arguments ({0}, {1}) and options
TORCH_CALLS: dict[str, str] = {
    "np.add": "{0} + {1}",
    "np.subtract": "{0} - {1}",
    "np.multiply": "{0} * {1}",
    "np.divide": "{0} / {1}",
    "np.negative": "-{0}",
    "np.power": "{0} ** {1}",
    "np.square": "torch.square({0})",
    "np.sqrt": "torch.sqrt({0})",
    "np.exp": "torch.exp({0})",
    "np.log": "torch.log({0})",
    "np.matmul": "{0} @ {1}",
    "np.add.reduce": "torch.sum({0}{options})",
    "np.maximum.reduce": "torch.amax({0}{options})",
}
TORCH_OPTIONS = {"axis": "dim", "keepdims": "keepdim"}
#: the in-place method of a NumPy statement whose first argument is its out
TORCH_IN_PLACE = {
    "np.add": "add_",
    "np.subtract": "sub_",
    "np.multiply": "mul_",
    "np.divide": "div_",
    "np.negative": "neg_",
    "np.power": "pow_",
    "np.square": "square_",
    "np.sqrt": "sqrt_",
    "np.exp": "exp_",
    "np.log": "log_",
}


class TorchPrinter(KernelPrinter):
    """The kernel printer's PyTorch backend: the same nodes, each statement an assignment
    ``out = <torch expression>`` (``TORCH_CALLS``) that makes a new tensor — or, once the block
    has made out's tensor, the in-place method (``TORCH_IN_PLACE``: no other name holds it) —,
    scalar functions from ``primitives.TORCH_FORMS``, softmax and log-softmax as torch's
    stable ``softmax``/``log_softmax`` by samples. A tensor filled with a scalar takes the
    dtype and device of ``like`` (X), so nothing crosses between host and device."""

    like = "X"
    folds_sums = False

    def __init__(
        self, names: dict[sp.Basic, str], buffers: Buffers, sizes: dict[sp.Symbol, int]
    ) -> None:
        super().__init__(names, buffers, sizes)
        self.owned: set[str] = set()  # names bound, in this block, to a tensor no other holds
        self.carry: set[str] = set()  # names the next block may take as owned (its caller's say)
        self.held: tuple[str, ...] = ()  # external tensors every kernel binds (its caller's say)

    def assign(self, out: str, expr: sp.Basic, scratch: tuple[str, ...] = ()) -> list[str]:
        """As KernelPrinter's; a tensor made in this block is then written in place."""
        self.owned, self.carry = self.carry, set()
        return super().assign(out, expr, scratch)

    def call(self, fn: str, *args: str, out: str, **options: str) -> None:
        if fn not in TORCH_CALLS:
            raise NotImplementedError(f"no PyTorch form for {fn} (codegen.TORCH_CALLS)")
        if out in self.owned and not options and self._in_place(fn, list(args), out):
            return
        opts = "".join(f", {TORCH_OPTIONS[key]}={value}" for key, value in options.items())
        operands = [f"({a})" if a.startswith("-") else a for a in args]
        self.bind(out, TORCH_CALLS[fn].format(*operands, options=opts))

    def _in_place(self, fn: str, args: list[str], out: str) -> bool:
        """out ← fn(args) written into out (a tensor this block made), when torch can."""
        if fn in ("np.add", "np.multiply") and args[-1] == out and args[0] != out:
            args.reverse()
        if fn in TORCH_IN_PLACE and args[0] == out:
            self.emit(f"{out}.{TORCH_IN_PLACE[fn]}({', '.join(args[1:])})")
            return True
        if fn == "np.subtract" and args[1] == out and not self._is_tensor(args[0]):
            self.emit(f"{out}.neg_().add_({args[0]})")  # c − x = c + (−x), exactly
            return True
        if fn == "np.divide" and args == ["1.0", out]:
            self.emit(f"{out}.reciprocal_()")
            return True
        return False

    def _is_tensor(self, code: str) -> bool:
        name = code.removesuffix(".T")
        return name in self.buffers.shapes or name in self.buffers.external

    def bind(self, out: str, expr: str) -> None:
        """out = expr, a new tensor that this block owns."""
        self.emit(f"{out} = {expr}")
        self.owned.add(out)

    def fill(self, out: str, value: str) -> None:
        shape = ", ".join(map(str, self.buffers.shape_of(out)))
        device = f"dtype={self.like}.dtype, device={self.like}.device"
        self.bind(out, f"torch.full(({shape},), {value}, {device})")

    def copy(self, out: str, name: str) -> None:
        """out names the same tensor as name: neither is written in place after."""
        self.emit(f"{out} = {name}")
        self.owned -= {out, name}

    def _print_Function(self, e: sp.Function, out: str) -> None:
        if type(e) not in TORCH_FORMS or len(e.args) != 1:
            raise NotImplementedError(
                f"no PyTorch form for {type(e).__name__} (primitives.TORCH_FORMS)"
            )
        form = TORCH_FORMS[type(e)]
        simple = re.fullmatch(r"torch\.(\w+)\(\{0\}\)", form)

        def write(a: str) -> None:
            if simple and a == out and out in self.owned:
                self.emit(f"{out}.{simple.group(1)}_()")  # tanh_, exp_, sigmoid_, …
            else:
                self.bind(out, form.format(a))

        self._unary(out, e.args[0], write)

    def _print_MatMul(self, e: MatMul, out: str) -> None:
        """c · A B as one BLAS call, C = α A B with α = c: −Gᵀ X costs no pass of its own.
        With beta=0 addmm does not read its input, which is a held tensor of C's shape (W^k
        for ∂L/∂W^k: no tensor made for it), else ``zero``, a 0-dim tensor the kernel makes."""
        coeff, rest = e.as_coeff_mmul()
        mats = [a for a in rest.args if isinstance(a, sp.MatrixExpr)]
        if coeff == 1 or len(mats) != 2 or _reduction(rest) is not None:
            super()._print_MatMul(e, out)
            return
        a, b = self.operand(mats[0]), self.operand(mats[1])
        shape = self.buffers.shape_of(out)
        ignored = next((h for h in self.held if self.buffers.external.get(h) == shape), "zero")
        self.bind(out, f"torch.addmm({ignored}, {a}, {b}, beta=0, alpha={self.scalar(coeff)})")

    def total(self, out: str, expr: sp.Basic) -> tuple[list[str], str]:
        """The statements that compute ``expr`` into out, and ``torch.sum(out)``."""
        return self.assign(out, expr), f"torch.sum({out})"

    def sum(self, kind: str, m: str, coeff: sp.Expr, out: str) -> None:
        """torch.sum over the samples or over each sample's entries, then c."""
        options = {"axis": "0"} if kind == "batch" else {"axis": "1", "keepdims": "True"}
        self.call("np.add.reduce", m, out=out, **options)
        if coeff != 1:
            self._entrywise(out, coeff * self.array(out))

    def _print_Softmax(self, e: Any, out: str) -> None:
        """e^{z − max z} / Σ e^{z − max z} by samples, torch's fused and stable form."""
        self.bind(out, f"torch.softmax({self.operand(e.arg)}, dim={e.axis})")

    def _print_LogSoftmax(self, e: Any, out: str) -> None:
        """(z − max z) − log Σ e^{z − max z} by samples, torch's fused and stable form."""
        self.bind(out, f"torch.log_softmax({self.operand(e.arg)}, dim={e.axis})")


def _cse_symbols() -> Iterator[sp.Symbol]:
    return (sp.Symbol(f"_cse{i}") for i in itertools.count())


def is_product(e: sp.Basic) -> bool:
    """A matrix product or a sum over samples or the batch (not a broadcast row)."""
    if not isinstance(e, MatMul):
        return False
    _, rest = e.as_coeff_mmul()
    mats = [a for a in rest.args if isinstance(a, sp.MatrixExpr)]
    return len(mats) >= 2 and _reduction(rest) != "broadcast"


def _reduction(e: sp.Basic) -> str | None:
    """'broadcast' for 1 bᵀ, 'batch' for 1ᵀ M, 'sample' for M 1 1ᵀ, else None."""
    if not isinstance(e, MatMul):
        return None
    first, last = e.args[0], e.args[-1]
    if isinstance(first, OneMatrix) and first.shape[1] == 1:
        return "broadcast"
    if isinstance(first, OneMatrix) and first.shape[0] == 1:
        return "batch"
    if isinstance(last, OneMatrix) and last.shape[0] == last.shape[1]:
        return "sample"
    return None


def _in_place_safe(e: sp.Expr, me: sp.Symbol, is_scalar: Callable[[sp.Expr], bool]) -> bool:
    """Whether e can be computed into the array it reads: a chain of one-argument steps
    ending at it, or it ± / · a rest that does not read it, or f · A · … with arrays A, …
    and one factor f that is such a chain (``_print_Mul`` computes f into it first)."""
    if e == me:
        return True
    if e.is_Add or e.is_Mul:
        inner = [a for a in e.args if not is_scalar(a)]
        readers = [a for a in inner if a.has(me)]
        if readers == [me]:
            return True
        if (
            e.is_Mul
            and len(readers) == 1
            and not (readers[0].is_Pow and readers[0].exp.is_negative)
            and all(a.is_Symbol for a in inner if a is not readers[0])
        ):
            return _in_place_safe(readers[0], me, is_scalar)
        return len(inner) == 1 and _in_place_safe(inner[0], me, is_scalar)
    if e.is_Pow:
        return is_scalar(e.exp) and _in_place_safe(e.base, me, is_scalar)
    if isinstance(e, sp.Function) and len(e.args) == 1:
        return _in_place_safe(e.args[0], me, is_scalar)
    return False


# --- compiling generated source ----------------------------------------------------------
_COUNTER = itertools.count()
NAMESPACE = {"np": np, "scipy": scipy, "math": math}


def compile_source(
    name: str, source: str, namespace: dict[str, Any] | None = None
) -> Callable[..., Any]:
    """exec the generated source as lambdify does, registering it in ``linecache`` so that
    tracebacks and ``inspect`` show it; the entry is freed with the function. ``namespace``
    holds the modules it names (default ``NAMESPACE``: np, scipy, math)."""
    filename = f"<lagrange_bp-generated-{name}-{next(_COUNTER)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = dict(NAMESPACE if namespace is None else namespace)
    exec(compile(source, filename, "exec"), namespace)
    fn = namespace[name]
    weakref.finalize(fn, linecache.cache.pop, filename, None)
    return fn


def numpy_source(expr: sp.MatrixExpr, args: tuple[sp.MatrixSymbol, ...]) -> str:
    """The source of ``numpy_function``: expr(args) for 2-D arrays of one shape (B, n), printed
    by ``KernelPrinter`` — what the kernels would run. It needs only ``np``, ``scipy`` and
    ``math`` (``grade_worker`` runs it without the package)."""
    buffers = Buffers()
    names = [f"a{i}" for i in range(len(args))]
    printer = KernelPrinter(dict(zip(args, names)), buffers, {})
    buffers.external = {n: ("B", "n") for n in names}
    buffers.declare("out", ("B", "n"))
    body = printer.assign("out", expr)
    temps = [(t, shape) for t, shape in buffers.shapes.items() if t != "out"]
    lines = [
        f"def numpy_function({', '.join(names)}):",
        f"    B, n = {names[0]}.shape",
        "    out = np.empty((B, n))",
        *[f"    {t} = np.empty(({', '.join(map(str, shape))},))" for t, shape in temps],
        *[f"    {line}" for line in body],
        "    return out",
    ]
    return "\n".join(lines) + "\n"


def numpy_function(expr: sp.MatrixExpr, args: tuple[sp.MatrixSymbol, ...]) -> Callable[..., Any]:
    """expr(args) as a NumPy function of 2-D arrays of one shape (B, n) (``numpy_source``).
    Used to probe users' expressions and to give ``check_rule`` candidates σ and σ'."""
    return compile_source("numpy_function", numpy_source(expr, args))
