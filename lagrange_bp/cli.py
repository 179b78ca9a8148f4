"""Step 6: the command line, ``lagrange-bp derive | verify | demo``.

Exit codes: 0 success (proven), 1 not proven, 2 bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .cli_graph import add_graph_args, graph_from_args
from .cli_train import (
    BadInput,
    add_train_parser,
    cmd_evaluate,
    cmd_train,
    split_names,
)
from .datasets import load
from .diagnostics import reference_gradient_gap
from .functions import ACTIVATIONS, LOSSES
from .generic import derive_generic as derive_general
from .grading import LAYOUTS, NoVerdict, SubmissionError, finish, grade, judge, plan, start
from .grading import report as rule_report
from .graph import GraphSpec
from .graph_doc import graph_document
from .graph_general import default_graphs, verify_graph_general
from .graph_render import render as render_graph
from .kkt import derive
from .model import Model
from .render import FORMATS, render
from .render_generic import render_generic
from .report_doc import general_document, latex_document, markdown_page
from .rules import ARGUMENTS, RULES
from .safe_io import one_line, printable, shown, unicode_safe
from .spec import MAX_EXACT_WEIGHTS, NetworkSpec
from .train import evaluate, train
from .verify import Report, check_trials, verify
from .verify_compiled import check_exact_memory
from .verify_general import DEFAULT_SPECS, verify_general


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def _widths(text: str) -> list[int]:
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"widths must be comma-separated integers such as 2,3,1, got {text!r}"
        ) from None


def _add_network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--widths", type=_widths, default=None, help="layer widths n_0,...,n_N (default 2,3,1)"
    )
    p.add_argument(
        "--activations",
        type=split_names,
        default=None,
        help=f"one name, or one per layer 1..N, comma-separated; "
        f"known: {', '.join(ACTIVATIONS)} (default sigmoid)",
    )
    p.add_argument("--loss", default=None, help=f"one of {', '.join(LOSSES)} (default mse)")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        metavar="ALPHA",
        help="α ≥ 0: the objective gets (α/2) Σ_k ‖W^k‖² (biases are not decayed; default 0, "
        "or a --graph FILE's own α); with --general any α > 0 derives the generic layer with a "
        "symbolic α",
    )


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    _add_network_args(p)
    p.add_argument(
        "--general",
        action="store_true",
        help="the generic layer: any depth and widths, in matrix-batch form (verify with "
        "--graph/--recurrent: the general proof for graphs, also checked at that graph)",
    )
    p.add_argument(
        "--max-weights",
        type=int,
        default=MAX_EXACT_WEIGHTS,
        help=f"size limit Σ n_k n_(k-1) of an exact derivation, 0 for none "
        f"(default {MAX_EXACT_WEIGHTS})",
    )


def _spec(args: argparse.Namespace, exact: bool = True) -> tuple[NetworkSpec, int | None]:
    """The validated spec and size limit; a bad one raises ``BadInput``. ``exact=False``: the
    command compiles the network and derives nothing exactly, so no size limit applies."""
    limit = None
    if exact:
        if args.max_weights < 0:
            raise BadInput(f"--max-weights must be ≥ 0 (0 lifts the limit), got {args.max_weights}")
        limit = args.max_weights or None
    try:
        spec = NetworkSpec(
            args.widths or [2, 3, 1],
            args.activations if args.activations is not None else ["sigmoid"],
            args.loss if args.loss is not None else "mse",
            args.weight_decay or 0.0,
        )
        if exact:
            spec.check_exact_size(limit)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    return spec, limit


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lagrange-bp",
        description=(
            "Derive backpropagation from the KKT conditions of a network's Lagrangian, "
            "and prove it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"lagrange-bp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("derive", help="print the Lagrangian and its KKT conditions")
    _add_spec_args(p)
    add_graph_args(p)
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument(
        "--output",
        help="write to this file instead of printing; with latex a complete document "
        "(pdflatex), with markdown a page: the batch problem, the Lagrangian, every KKT "
        "condition, the matrix form, the algorithm, a worked example with numbers and the "
        "proof in full (with --general: the generic layer and the general proof)",
    )
    p = sub.add_parser("verify", help="prove the derived equations are backpropagation")
    _add_spec_args(p)
    add_graph_args(p)
    p.add_argument(
        "--compiled",
        action="store_true",
        help="prove the generated NumPy kernels of this network instead: their source, run in "
        "exact arithmetic at the real widths (no size limit)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="random points per identity test (default 2, or 1 with --compiled; at most 100)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    rule_arguments = "; ".join(f"{rule}({args})" for rule, args in ARGUMENTS.items())
    p = sub.add_parser(
        "check",
        help="check your own derived rule (runs YOUR Python file in a separate process)",
        description="Check a rule you derived against the KKT equations. --candidate "
        "FILE.py:NAME imports FILE.py in a separate process and calls NAME with keyword "
        "arguments, NumPy arrays with samples as rows (--layout columns: as columns); the "
        "verdict, and the kind of slip when it is wrong, are decided outside that process. "
        f"Arguments of each rule: {rule_arguments}. sigma and dsigma are the layer's σ and σ' "
        "as NumPy functions.",
    )
    p.add_argument("--rule", required=True, choices=RULES)
    p.add_argument("--candidate", required=True, help="FILE.py:FUNCTION, your rule")
    _add_layout_args(p)
    _add_spec_args(p)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser(
        "grade",
        help="grade a submission: its five rules, each in a separate process, with partial credit",
        description="Grade SUBMISSION.py, a file defining functions named after the rules "
        f"({rule_arguments}), each run in a separate process with a time and a memory limit. "
        "Prints a verdict per rule (the kind of slip and a hint when it is wrong), the first "
        "wrong step and the score; --json for course tooling. Exit status 0 when every rule "
        "is right, 1 otherwise.",
    )
    p.add_argument("submission", help="the student's .py file")
    _add_layout_args(p)
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds each rule may run (default 10)"
    )
    p.add_argument("--json", action="store_true", help="print the grade as JSON")
    _add_network_args(p)
    p.add_argument("--seed", type=int, default=0)
    add_train_parser(sub)
    sub.add_parser(
        "demo",
        help="derive, prove, compile, train and prove the compiled code: the whole pipeline in "
        "about ten seconds",
    )
    return parser


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _spec_given(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.widths, args.activations, args.loss))


def _general_decay(args: argparse.Namespace) -> bool:
    """Whether --general derives with a weight decay α (any α > 0: α stays a symbol)."""
    alpha = args.weight_decay or 0.0
    if not (alpha >= 0 and alpha < float("inf")):
        raise BadInput(f"--weight-decay must be a finite number α ≥ 0, got {alpha!r}")
    return alpha > 0


def _graph(args: argparse.Namespace, general: bool = False) -> tuple[GraphSpec, int | None] | None:
    """The graph of --graph or --recurrent and the size limit, or None; bad input raises.
    ``general``: --general applies (verify: the general proof for graphs)."""
    try:
        graph = graph_from_args(args)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    if graph is None:
        return None
    clash = [
        name
        for name, given in (
            ("--widths", args.widths is not None),
            ("--general", args.general and not general),
            ("--compiled", getattr(args, "compiled", False)),
        )
        if given
    ]
    if clash:
        raise BadInput(f"{clash[0]} does not apply to --graph/--recurrent; drop it")
    if args.max_weights < 0:
        raise BadInput(f"--max-weights must be ≥ 0 (0 lifts the limit), got {args.max_weights}")
    limit = args.max_weights or None
    try:
        graph.check_exact_size(limit)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return graph, limit


def _derive_graph(args: argparse.Namespace, graph: GraphSpec, limit: int | None) -> int:
    """derive --graph/--recurrent: the graph's derivation in the chosen format; with --output,
    latex and markdown are a printable document with the proof."""
    d = derive(graph, max_weights=limit)
    page = render_graph(d, args.format)
    if not args.output:
        print(page)
        return 0
    if args.format in ("latex", "markdown"):
        page = graph_document(args.format, d, verify(graph, max_weights=limit, derivation=d))
    _write(args.output, page + "\n")
    print(f"{args.format} derivation of {graph.describe()} written to {printable(args.output)}")
    return 0


def cmd_derive(args: argparse.Namespace) -> int:
    given = _graph(args)
    if given is not None:
        return _derive_graph(args, *given)
    if args.general:
        g = derive_general(_general_decay(args))
        if args.format == "json":
            raise BadInput("--general prints text, latex or markdown, not json")
        if _spec_given(args):
            raise BadInput(
                "--general derives the generic layer: drop --widths/--activations/--loss"
            )
        if not args.output:
            print(render_generic(args.format, g), end="")
            return 0
        if args.format == "text":
            page = render_generic("text", g)
        else:
            report = verify_general(derivation=g, weight_decay=g.decay != 0)
            page = general_document(args.format, g, report)
        _write(args.output, page)
        print(f"{args.format} derivation of the generic layer written to {printable(args.output)}")
        return 0
    spec, limit = _spec(args)
    d = derive(spec, max_weights=limit)
    if not args.output:
        print(render(d, args.format))
        return 0
    if args.format in ("latex", "markdown"):
        if spec.weight_decay:
            raise BadInput(
                "--output writes the document of the objective without weight decay; drop "
                "--output to print these equations, or use --general --weight-decay"
            )
        report = verify(spec, max_weights=limit, derivation=d)
        page = latex_document(d, report) if args.format == "latex" else markdown_page(d, report)
    else:
        page = render(d, args.format) + "\n"
    _write(args.output, page)
    print(f"{args.format} derivation of {spec.describe()} written to {printable(args.output)}")
    return 0


def _write(path: str, page: str) -> None:
    """Write --output; a path that cannot be written is bad input, said in one line."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        raise BadInput(f"cannot write --output {shown(path)}: {exc.strerror}") from None


def report_json(report: Report) -> str:
    """The proof report as JSON."""
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        trials = check_trials(args.trials if args.trials is not None else 2)
    except ValueError as exc:
        raise BadInput(f"--{exc}") from None
    given = _graph(args, general=True)
    if given is not None and args.general:  # the general proof, instantiated at this graph too
        graphs = (*default_graphs(), given[0])
        report = verify_graph_general(graphs, seed=args.seed, progress=_progress)
        print(report_json(report) if args.json else report)
        return 0 if report.ok else 1
    if given is not None:
        graph, limit = given
        report = verify(graph, trials=trials, seed=args.seed, max_weights=limit, progress=_progress)
        print(report_json(report) if args.json else report)
        return 0 if report.ok else 1
    if args.compiled:
        if args.general:
            raise BadInput("give --general or --compiled, not both")
        spec = _spec(args, exact=False)[0]
        try:
            check_exact_memory(spec)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        n = args.trials if args.trials is not None else 1
        report = verify(Model(spec), trials=n, seed=args.seed, progress=_progress)
        print(report_json(report) if args.json else report)
        return 0 if report.ok else 1
    if args.general:
        decay = _general_decay(args)
        specs = DEFAULT_SPECS + ((_spec(args)[0],) if _spec_given(args) else ())
        report = verify_general(specs, seed=args.seed, progress=_progress, weight_decay=decay)
        print(report_json(report) if args.json else report)
        return 0 if report.ok else 1
    spec, limit = _spec(args)
    report = verify(spec, trials=trials, seed=args.seed, max_weights=limit, progress=_progress)
    print(report_json(report) if args.json else report)
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Derive, prove, compile and train: the README's main job, in well under a minute."""
    start = time.perf_counter()
    small = NetworkSpec((2, 3, 1), "sigmoid", "mse")
    print("=== 1. Derivation for a 2-3-1 network (lagrange-bp derive) ===")
    print(render(derive(small)))
    print("\n=== 2. Proof (lagrange-bp verify) ===")
    reports = [verify(small)]
    print(reports[0])
    big = NetworkSpec((8, 8, 8, 8, 3), ("tanh", "tanh", "tanh", "softmax"), "cross_entropy")
    reports.append(verify(big, progress=_progress))
    print(f"\n{_first_line(reports[1])}")
    reports.append(verify_general(progress=_progress))
    print(_first_line(reports[2]))
    print("\n=== 3. Compile the digits network and train it (lagrange-bp train) ===")
    data = load("digits")
    spec = NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")
    model = Model(spec)
    result = train(
        model,
        data.X_train,
        data.Y_train,
        epochs=30,
        batch_size=32,
        lr=0.1,
        seed=0,
        validation=(data.X_test, data.Y_test),
    )
    test = evaluate(model, result.params, data.X_test, data.Y_test)
    gap = reference_gradient_gap(model, result.params, data.X_test, data.Y_test)
    print(
        f"{data.describe()}\nnetwork {spec.describe()}, 30 epochs, batch 32, lr 0.1: "
        f"{result.seconds:.2f} s"
    )
    print(f"test accuracy {100 * test['accuracy']:.2f}%, test loss {test['loss']:.4f}")
    print(f"largest |generated ∂L/∂θ − reference backprop| at the trained weights: {gap:.1e}")
    print("\n=== 4. Prove the code that just trained (lagrange-bp verify --compiled) ===")
    reports.append(verify(model, progress=_progress))
    print(_first_line(reports[-1]))
    ok = all(r.ok for r in reports) and gap < 1e-10 and test["accuracy"] > 0.9
    print(
        f"\ndemo: {'all proofs hold, training works' if ok else 'A CHECK FAILED'} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0 if ok else 1


CHECK_TIMEOUT = 600  # seconds a candidate may take


def _add_layout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="rows",
        help="samples as rows (default, as the NumPy model) or as columns (Z = W X + b 1ᵀ)",
    )


def cmd_check(args: argparse.Namespace) -> int:
    """Run the candidate in its own process (``grade_worker``), which returns only arrays: the
    verdict is decided here, and a process that ends without results is a WRONG rule."""
    if args.general:
        raise BadInput("check works at concrete sizes (--widths); --general does not apply")
    spec, _ = _spec(args, exact=False)
    path, sep, name = args.candidate.rpartition(":")
    if not sep or not path or not name:
        raise BadInput(f"--candidate must be FILE.py:FUNCTION, got {shown(args.candidate)}")
    if not os.path.isfile(path):
        raise BadInput(f"--candidate: file {shown(path)} does not exist")
    try:
        calls, skipped = plan(spec, args.rule, args.seed, args.layout)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    job = start(Path(path), name, calls, memory_mb=4096)
    try:
        outcomes = finish(job, CHECK_TIMEOUT, len(calls))
    except SubmissionError as exc:
        if str(exc) == "missing":
            raise BadInput(f"--candidate: {shown(path)} has no function {shown(name)}") from None
        raise BadInput(f"--candidate: importing {shown(path)} failed: {shown(str(exc))}") from None
    except NoVerdict as exc:
        print(f"rule {args.rule!r} for {spec.describe()}: WRONG (no verdict: {exc})")
        return 1
    rep = rule_report(spec, args.rule, args.layout, judge(args.rule, calls, outcomes), skipped)
    print(rep)
    return 0 if rep.ok else 1


def cmd_grade(args: argparse.Namespace) -> int:
    """Grade a submission's five rules (``grading.grade``); exit 0 only when all are right."""
    args.general, args.compiled = False, False
    spec, _ = _spec(args, exact=False)
    if not os.path.isfile(args.submission) or not args.submission.endswith(".py"):
        raise BadInput(f"submission must be an existing .py file, got {shown(args.submission)}")
    try:
        result = grade(
            spec, args.submission, timeout=args.timeout, layout=args.layout, seed=args.seed
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    print(result.to_json() if args.json else result)
    return 0 if result.score == result.max_score else 1


def _first_line(report: Report) -> str:
    return str(report).splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lagrange-bp`` console script."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = unicode_safe(sys.stdout), unicode_safe(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {
            "derive": cmd_derive,
            "verify": cmd_verify,
            "demo": cmd_demo,
            "check": cmd_check,
            "grade": cmd_grade,
            "train": cmd_train,
            "evaluate": cmd_evaluate,
        }
        return commands[args.command](args)
    except BadInput as exc:
        print(f"lagrange-bp: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the conventional status, nothing written
        print("lagrange-bp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
