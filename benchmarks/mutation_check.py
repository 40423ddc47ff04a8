"""Mutation check of the math modules: flip one operator or constant at a time, run the tests.

Each mutant changes one AST node of ``algo/losses.py``, ``algo/risk.py``, ``optim/upgd.py`` or
``optim/scaler.py``: ``+ <-> -``, ``* <-> /``, ``** -> *``, ``< <-> <=``, ``> <-> >=``,
``== <-> !=``, ``and <-> or``, a unary minus dropped, ``min <-> max``, a number ``c -> c + 1``.
Not mutated: input validation (an ``if`` whose body only raises), default argument values,
annotations and strings. The mutant is written to a copy of ``src/`` (the working tree is never
touched) that the tests import (pytest runs in a child forked from a process that has imported
torch once); the module's test files run with ``-x`` and a timeout. A mutant is *killed* when
the tests fail (or time out), *survived* otherwise.

    .venv/bin/python benchmarks/mutation_check.py                 # all four modules
    .venv/bin/python benchmarks/mutation_check.py --module algo/risk.py --list

It does not run in CI (minutes on two cores).
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "tradingbot"

# Module (relative to the package) -> the test files (and -k filter) that check it. The slow
# learning tests of test_risk (bandits, ~10 s each) are left out: the math is covered by the
# known-answer tests.
_FAST_RISK = "not bandit and not cvar_above_limit"
TARGETS: dict[str, tuple[list[str], str | None]] = {
    "algo/losses.py": (["tests/test_losses.py", "tests/test_risk.py"], _FAST_RISK),
    "algo/risk.py": (["tests/test_risk.py"], _FAST_RISK),
    "optim/upgd.py": (["tests/test_upgd.py"], None),
    "optim/scaler.py": (["tests/test_scaler.py"], None),
}

_BINOPS: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.Pow: ast.Mult,
}
_CMPOPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
}


@dataclass(frozen=True)
class Mutant:
    """One mutation: the node's index in ``ast.walk`` order, its line and what it does."""

    index: int
    line: int
    description: str


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes that are not mutated: validation ``if``s that only raise, default
    argument values, annotations."""
    skipped: set[int] = set()

    def skip(node: ast.AST) -> None:
        skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.If) and all(isinstance(s, ast.Raise) for s in node.body):
            skip(node.test)
        elif isinstance(node, ast.Raise):
            skip(node)
        elif isinstance(node, ast.arguments):
            for default in [*node.defaults, *node.kw_defaults]:
                if default is not None:
                    skip(default)
        elif isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation is not None:
            skip(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            skip(node.returns)
        elif isinstance(node, ast.JoinedStr):
            skip(node)
    return skipped


def _mutation(node: ast.AST) -> tuple[str, ast.AST] | None:
    """The mutation of ``node`` (a description and the mutated copy), or None."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        new = copy.copy(node)
        new.op = _BINOPS[type(node.op)]()
        return f"{type(node.op).__name__} -> {type(new.op).__name__}", new
    if isinstance(node, ast.AugAssign) and type(node.op) in _BINOPS:
        new = copy.copy(node)
        new.op = _BINOPS[type(node.op)]()
        return f"{type(node.op).__name__}= -> {type(new.op).__name__}=", new
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
        new = copy.copy(node)
        new.ops = [_CMPOPS[type(node.ops[0])]()]
        return f"{type(node.ops[0]).__name__} -> {type(new.ops[0]).__name__}", new
    if isinstance(node, ast.BoolOp):
        new = copy.copy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return f"{type(node.op).__name__} -> {type(new.op).__name__}", new
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return "drop unary minus", node.operand
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        swap = {"min": "max", "max": "min"}.get(node.func.id)
        if swap:
            new = copy.copy(node)
            new.func = ast.Name(id=swap, ctx=ast.Load())
            return f"{node.func.id}() -> {swap}()", new
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return f"{node.value!r} -> {node.value + 1!r}", ast.Constant(value=node.value + 1)
    return None


def mutants(source: str) -> Iterator[Mutant]:
    """Every mutation site of ``source``, in ``ast.walk`` order."""
    tree = ast.parse(source)
    skipped = _skipped_nodes(tree)
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skipped:
            continue
        found = _mutation(node)
        if found is not None:
            yield Mutant(index, getattr(node, "lineno", 0), found[0])


def mutate(source: str, index: int) -> str:
    """``source`` with the node at ``index`` (``ast.walk`` order) mutated."""
    tree = ast.parse(source)
    nodes = list(ast.walk(tree))
    target = nodes[index]
    found = _mutation(target)
    assert found is not None
    replacement = found[1]

    class Replace(ast.NodeTransformer):
        def generic_visit(self, node: ast.AST) -> ast.AST:
            if node is target:
                return ast.copy_location(replacement, node)
            return super().generic_visit(node)

    new_tree = ast.fix_missing_locations(Replace().visit(tree))
    return ast.unparse(new_tree)


def _preload() -> None:
    """Import the heavy dependencies once in the parent, so each forked test run starts warm
    (``tradingbot`` itself is not imported: each child imports its mutated copy)."""
    import gymnasium  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import sb3_contrib  # noqa: F401
    import scipy.stats  # noqa: F401
    import stable_baselines3  # noqa: F401
    import torch  # noqa: F401


def run_tests(src_copy: Path, tests: list[str], keyword: str | None, timeout: float) -> str:
    """``killed``, ``survived`` or ``timeout`` for the code under ``src_copy``: pytest runs in
    a forked child that imports ``tradingbot`` from ``src_copy``."""
    args = ["-x", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), *tests]
    if keyword:
        args += ["-k", keyword]
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            import pytest

            os.chdir(ROOT)
            sys.path.insert(0, str(src_copy))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = int(pytest.main(args))
        finally:
            os._exit(code)
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def _label(module: str, mutant: Mutant, lines: list[str]) -> str:
    return f"{module}:{mutant.line}: {mutant.description}: {lines[mutant.line - 1].strip()}"


def check_module(
    module: str, work: Path, list_only: bool, only: set[str] | None = None
) -> tuple[int, int, list[str]]:
    """Run every mutant of ``module`` (those whose label is in ``only``, when given); return
    (killed, total, survivor labels)."""
    tests, keyword = TARGETS[module]
    path = work / "tradingbot" / module
    original = path.read_text()
    lines = original.splitlines()
    sites = list(mutants(original))
    if only is not None:
        sites = [m for m in sites if _label(module, m, lines) in only]
    if list_only:
        for m in sites:
            print(_label(module, m, lines))
        return 0, len(sites), []
    start = time.time()
    baseline = run_tests(work, tests, keyword, timeout=600)
    if baseline != "survived":
        raise SystemExit(f"{module}: the tests fail on the unmutated code")
    timeout = 3 * (time.time() - start) + 30
    killed, survivors = 0, []
    try:
        for m in sites:
            path.write_text(mutate(original, m.index))
            outcome = run_tests(work, tests, keyword, timeout)
            if outcome == "survived":
                survivors.append(_label(module, m, lines))
                print("  SURVIVED", survivors[-1], flush=True)
            else:
                killed += 1
    finally:
        path.write_text(original)
    return killed, len(sites), survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS))
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument(
        "--only",
        type=Path,
        help="run only the mutants listed in this file, one label a line (e.g. the "
        "'survived: ' lines of an earlier run, prefix stripped or not)",
    )
    args = parser.parse_args(argv)
    modules = args.module or list(TARGETS)
    only = None
    if args.only is not None:
        only = {
            line.strip().removeprefix("survived: ").removeprefix("SURVIVED ")
            for line in args.only.read_text().splitlines()
            if line.strip()
        }
    total_killed = total = 0
    all_survivors: list[str] = []
    if not args.list:
        _preload()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(PACKAGE, work / "tradingbot")
        for module in modules:
            start = time.time()
            killed, count, survivors = check_module(module, work, args.list, only)
            total_killed, total = total_killed + killed, total + count
            all_survivors += survivors
            if not args.list:
                print(f"{module}: {killed}/{count} killed ({time.time() - start:.0f} s)")
    if args.list:
        print(f"{total} mutants")
        return 0
    print(f"total: {total_killed}/{total} killed ({100 * total_killed / max(total, 1):.1f} %)")
    for line in all_survivors:
        print("survived:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
