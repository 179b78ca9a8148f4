"""How the package's objects show in Jupyter and at the prompt.

Each object has a short ``repr``; derivations, reports and rule verdicts also have
``_repr_markdown_`` (what Jupyter shows: headings, ``$$`` displays, a table of proof steps with
the details folded away) and ``_repr_latex_`` (the same mathematics as LaTeX for MathJax or a
document). Text that can carry a user's expression (a spec's description, a step's detail) is
escaped for each format: Markdown and HTML characters, and LaTeX's special characters.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generic import GenericDerivation
    from .kkt import Derivation
    from .rules import RuleReport
    from .verify import Report

#: what LaTeX acts on inside \text{...}, and how to show each character instead
_TEX_SPECIAL = {
    "\\": r"\backslash ",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "_": r"\_",
    "^": r"\hat{}",
    "~": r"\sim ",
    "<": "< ",  # in math mode, and never the start of an HTML tag where MathJax reads it
    ">": "> ",
}


def tex_text(text: str) -> str:
    r"""Plain text as LaTeX math-mode material: runs of ordinary characters in \text{...},
    each special character outside it in its math form (so a name such as cross_entropy or an
    expression such as z**2 shows as written, and nothing in it acts as LaTeX). The package's
    own shorthand x^k, x^{k-1}, σ_k, 2^61 becomes a real superscript or subscript."""
    out, run, i = [], "", 0
    while i < len(text):
        ch = text[i]
        script = _script(text, i) if ch in "^_" else None
        if ch not in _TEX_SPECIAL and ch.isprintable():
            run += ch
            i += 1
            continue
        if run:
            out.append(rf"\text{{{run}}}")
            run = ""
        if script is not None:
            token, i = script
            out.append(f"{ch}{{{tex_text(token)}}}")
        else:
            out.append(_TEX_SPECIAL.get(ch, ""))
            i += 1
    if run:
        out.append(rf"\text{{{run}}}")
    return "".join(out)


def _script(text: str, i: int) -> tuple[str, int] | None:
    """(token, end) of the shorthand superscript or subscript at text[i] (^ or _): a {group},
    a run of digits, or one letter or digit not followed by another (cross_entropy is a name)."""
    rest = text[i + 1 :]
    if rest.startswith("{") and "}" in rest:
        close = rest.index("}")
        return rest[1:close], i + 2 + close
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if digits:
        return rest[:digits], i + 1 + digits
    if rest[:1].isalnum() and not rest[1:2].isalnum():
        return rest[:1], i + 2
    return None


def script_token(text: str, i: int) -> tuple[str, int] | None:
    """(token, end) of the shorthand super- or subscript at text[i] (``^`` or ``_``), or None:
    what ``tex_text`` raises or lowers, for other writers of the same shorthand."""
    return _script(text, i)


def markdown_text(text: str) -> str:
    """Text for Markdown prose or a table cell: every character Markdown or HTML could act on
    is escaped (an expression such as z*tanh(z)*z shows as written)."""
    return "".join("\\" + ch if ch in "\\`*_[]<>|~#" else ch for ch in text)


def _verdict(ok: bool) -> str:
    return "PROVEN" if ok else "NOT PROVEN"


# --- proof reports -----------------------------------------------------------------------------
def report_repr(r: Report) -> str:
    return f"<Report {r.title}: {_verdict(r.ok)}, {len(r.steps)} steps, {r.seconds:.2f} s>"


def report_summary(r: Report) -> str:
    """Two lines: the verdict, then each step's label with ✓ or ✗ (the failed ones named)."""
    head = f"{r.title}: {_verdict(r.ok)} ({len(r.steps)} steps, {r.seconds:.2f} s)"
    failed = [s for s in r.steps if not s.ok]
    if not r.steps:
        return head + "\n  no steps were run"
    if failed:
        return head + "\n  failed: " + "; ".join(f"({s.label}) {s.claim}" for s in failed)
    marks = " ".join(f"({s.label}) ✓" for s in r.steps)
    return f"{head}\n  {marks}  (print the report for each step's claim, method and details)"


def report_markdown(r: Report) -> str:
    rows = [
        f"| ({markdown_text(s.label)}) | {markdown_text(s.claim)} | "
        f"{'✓' if s.ok else '✗ **failed**'} | {markdown_text(s.method)} | {s.seconds:.2f} s |"
        for s in r.steps
    ]
    details = html.escape(str(r))
    return "\n".join(
        [
            f"**{markdown_text(r.title)}: {_verdict(r.ok)}** ({r.seconds:.2f} s)",
            "",
            "| step | claim | holds | method | time |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"<details><summary>Details of each step</summary><pre>{details}</pre></details>",
        ]
    )


def report_latex(r: Report) -> str:
    marks = {True: r"\checkmark", False: r"\times"}
    rows = [tex_text(f"{r.title}: {_verdict(r.ok)} ({r.seconds:.2f} s)")]
    rows += [rf"\text{{({s.label}) }} {marks[s.ok]} \; {tex_text(s.claim)}" for s in r.steps]
    return "$$\\begin{array}{l}\n" + " \\\\\n".join(rows) + "\n\\end{array}$$"


# --- rule verdicts -----------------------------------------------------------------------------
def rule_repr(r: RuleReport) -> str:
    return f"<RuleReport {r.rule!r} for {r.spec.describe()}: {'RIGHT' if r.ok else 'WRONG'}>"


def rule_markdown(r: RuleReport) -> str:
    lines = str(r).splitlines()
    verdict = "RIGHT" if r.ok else "WRONG"
    head = f"**rule `{r.rule}` for {markdown_text(r.spec.describe())}: {verdict}**"
    body = html.escape("\n".join(lines[1:]))
    return head + f" ({markdown_text(r.method)})" + (f"\n\n<pre>{body}</pre>" if body else "")


def rule_latex(r: RuleReport) -> str:
    rows = r" \\ ".join(tex_text(line) for line in str(r).splitlines())
    return rf"$$\begin{{array}}{{l}}{rows}\end{{array}}$$"


# --- derivations -------------------------------------------------------------------------------
def derivation_repr(d: Derivation) -> str:
    return (
        f"<Derivation {d.spec.describe()}: {len(d.forward)} forward, {len(d.adjoint)} adjoint, "
        f"{len(d.gradients)} gradient equations>"
    )


def derivation_markdown(d: Derivation) -> str:
    from .render import render

    return render(d, "markdown")


def derivation_latex(d: Derivation) -> str:
    from .render import render

    return displays(render(d, "latex"))


def general_repr(g: GenericDerivation) -> str:
    return "<GenericDerivation: the generic layer k, any depth N, any widths, batch B>"


def general_markdown(g: GenericDerivation) -> str:
    from .render_generic import render_generic

    return render_generic("markdown", g)


def general_latex(g: GenericDerivation) -> str:
    from .render_generic import render_generic

    return displays(render_generic("latex", g))


def displays(latex: str) -> str:
    """``align*`` blocks (with % comments) as ``$$`` displays, which MathJax renders."""
    out = []
    for line in latex.splitlines():
        if line.startswith("%"):
            continue
        if line == r"\begin{align*}":
            out.append("$$" + line)
        elif line == r"\end{align*}":
            out.append(line + "$$")
        else:
            out.append(line)
    return "\n".join(out)
