"""Safe parsing of user-written activations (in z) and losses (in x and y) into SymPy.

The text is parsed by Python's ``ast`` and every node is checked against a whitelist before a
SymPy expression is built from it node by node: nothing is evaluated, and ``eval``,
``sympify`` and ``parse_expr`` are never called on the text. Allowed: numbers, the named
variables, ``pi`` and ``e``, + − * / ** and unary minus, and calls of the functions in
``FUNCTIONS`` with positional arguments. Anything else raises ``ValueError`` naming the part.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

import sympy as sp

from .functions import relu, sigmoid, softplus

MAX_LENGTH = 300
MAX_NODES = 200
MAX_DEPTH = 24
MAX_EXPONENT = 16
MAX_CONSTANT = 1e12

FUNCTIONS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "atan": sp.atan,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "tanh": sp.tanh,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "relu": relu,
}
CONSTANTS = {"pi": sp.pi, "e": sp.E}
BINARY = {
    ast.Add: sp.Add,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: sp.Mul,
    ast.Div: lambda a, b: a / b,
    ast.Pow: sp.Pow,
}


def parse(text: str, variables: tuple[str, ...], what: str) -> sp.Expr:
    """The SymPy expression of ``text`` in real Symbols named ``variables``.

    ``what`` names the item in error messages, e.g. "activation" or "loss".
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ValueError(
            f"{what} expression is too long ({len(text)} characters, at most {MAX_LENGTH})"
        )
    if not text.strip():
        raise ValueError(f"{what} is empty: give a name or an expression")
    bad = next((ch for ch in text if not (ch.isprintable() and ch.isascii()) or ch == "#"), None)
    if bad is not None:
        why = "comments are" if bad == "#" else f"the character {bad!r} is"
        raise ValueError(f"{what} {text!r}: {why} not allowed in an expression")
    depth = 0
    for ch in text:  # bound nesting before Python's parser sees it
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
        if depth > MAX_DEPTH:
            raise ValueError(
                f"{what} expression is nested too deeply (more than {MAX_DEPTH} levels of brackets)"
            )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ValueError(
            f"{what} {text!r} is not a valid expression: {getattr(exc, 'msg', exc)}"
        ) from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise ValueError(
            f"{what} expression is too large ({nodes} syntax nodes, at most {MAX_NODES})"
        )
    symbols = {v: sp.Symbol(v, real=True) for v in variables}
    expr = _Builder(text, symbols, what).build(tree.body, 0)
    if expr.has(sp.I, sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise ValueError(
            f"{what} {text!r} is not a real, finite expression: it simplifies to {expr}"
        )
    return expr


class _Builder:
    def __init__(self, text: str, symbols: dict[str, sp.Symbol], what: str) -> None:
        self.text, self.symbols, self.what = text, symbols, what

    def fail(self, node: ast.AST, why: str) -> ValueError:
        part = ast.get_source_segment(self.text, node) or type(node).__name__
        return ValueError(f"{self.what} {self.text!r}: {why}: {part!r}")

    def build(self, node: ast.AST, depth: int) -> sp.Expr:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nested more than {MAX_DEPTH} levels")
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise self.fail(node, "dunder names are not allowed")
            if node.id in self.symbols:
                return self.symbols[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            known = ", ".join([*self.symbols, *CONSTANTS])
            raise self.fail(node, f"unknown variable (use {known})")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.build(node.operand, depth + 1)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            left = self.build(node.left, depth + 1)
            right = self.build(node.right, depth + 1)
            if isinstance(node.op, ast.Pow):
                self.check_exponent(node, left, right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise self.fail(node, "division by zero")
            return BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.Attribute):
            raise self.fail(node, "attribute access is not allowed")
        if isinstance(node, ast.Lambda):
            raise self.fail(node, "lambdas are not allowed")
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            raise self.fail(node, "comprehensions are not allowed")
        raise self.fail(
            node,
            f"{type(node).__name__} is not allowed (only numbers, variables, "
            f"+ - * / ** and the functions {', '.join(FUNCTIONS)})",
        )

    def constant(self, node: ast.Constant) -> sp.Expr:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(node, "only numbers are allowed as constants")
        if not math.isfinite(v) or abs(v) > MAX_CONSTANT:
            raise self.fail(node, f"numbers must be finite and at most {MAX_CONSTANT:g}")
        return sp.Integer(v) if isinstance(v, int) else sp.Rational(repr(v))

    def check_exponent(self, node: ast.BinOp, base: sp.Expr, exponent: sp.Expr) -> None:
        if exponent.is_number and (abs(exponent) > MAX_EXPONENT):
            raise self.fail(node, f"constant exponents must be at most {MAX_EXPONENT} in size")
        if base.is_number and exponent.is_number and base != 0:
            size = float(abs(exponent)) * abs(math.log10(float(abs(base))))
            if size > math.log10(MAX_CONSTANT):  # bound constant powers before SymPy builds them
                raise self.fail(node, f"constant powers must stay within {MAX_CONSTANT:g} in size")

    def call(self, node: ast.Call, depth: int) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, "only calls of plain function names are allowed")
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.fail(node.func, f"function not allowed (allowed: {', '.join(FUNCTIONS)})")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise self.fail(node, f"{name} takes exactly one positional argument")
        return FUNCTIONS[name](self.build(node.args[0], depth + 1))
