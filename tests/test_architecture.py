"""The package's structure: no import cycle among its modules, no file over 400 lines, and
no module outside ``tradingbot.algo`` reaching into DistributionalPPO's private members.

The import graph is built from every import statement of every module under
``src/tradingbot``: module level, under ``if TYPE_CHECKING:`` (a cycle through type hints is
still a cycle of concepts) and inside functions. A function-level import keeps the CLI's
start-up fast (``tradingbot --help`` must not import torch); it must not hide a cycle, which
would fail only when the function runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tradingbot"
MAX_LINES = 400


def module_name(path: Path) -> str:
    """``src/tradingbot/algo/ppo.py`` -> ``tradingbot.algo.ppo`` (packages: their name)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements run when the module is imported: at top level, and inside
    top-level ``if`` / ``try`` blocks (``if TYPE_CHECKING:`` among them), not in functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try):
            stack.extend(node.body)
            stack.extend(node.orelse)
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    stack.extend(handler.body)
                stack.extend(node.finalbody)
    return found


def resolve(importer: str, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package modules an import statement imports: ``from pkg import name`` counts as
    an import of the submodule ``pkg.name`` when that is a module, else of ``pkg``."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                targets.add(alias.name)
        return targets
    base = node.module or ""
    if node.level:
        package = importer.split(".")
        if not modules()[importer].name == "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        if candidate in known:
            targets.add(candidate)
        elif base in known:
            targets.add(base)
    return targets


def all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, inside functions and classes included."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def import_graph(module_level_only: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports (only at module level when asked)."""
    found = modules()
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        statements = module_level_imports(tree) if module_level_only else all_imports(tree)
        for node in statements:
            edges |= resolve(name, node, known)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or ``None``."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, black) == grey:
                return [*path[path.index(nxt) :], nxt]
            if colour.get(nxt) == white:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        colour[node] = black
        return None

    for start in sorted(graph):
        if colour[start] == white:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_known_cycle_and_accepts_a_dag() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_resolve_maps_a_from_import_of_a_submodule_to_the_submodule() -> None:
    known = {"tradingbot", "tradingbot.algo", "tradingbot.algo.ppo", "tradingbot.algo.policy"}
    tree = ast.parse(
        "from tradingbot.algo import ppo\n"
        "from tradingbot.algo import PPOConfig\n"
        "import tradingbot.algo.policy\n"
    )
    resolved = [resolve("tradingbot.cli", node, known) for node in tree.body]
    assert resolved == [{"tradingbot.algo.ppo"}, {"tradingbot.algo"}, {"tradingbot.algo.policy"}]


def test_type_checking_imports_count_and_function_imports_do_not() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from tradingbot.algo.ppo import DistributionalPPO\n"
        "def f():\n"
        "    from tradingbot.algo.policy import LSTMStates\n"
    )
    names = [node.module for node in module_level_imports(tree)]
    assert sorted(names) == ["tradingbot.algo.ppo", "typing"]


def test_all_imports_include_the_ones_inside_functions() -> None:
    tree = ast.parse(
        "import json\n"
        "def f():\n"
        "    from tradingbot.algo.policy import LSTMStates\n"
        "class C:\n"
        "    def g(self):\n"
        "        import tradingbot.train\n"
    )
    names = [getattr(node, "module", None) or node.names[0].name for node in all_imports(tree)]
    assert sorted(names) == ["json", "tradingbot.algo.policy", "tradingbot.train"]


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "all"])
def test_no_import_cycle_among_the_package_modules(module_level_only: bool) -> None:
    graph = import_graph(module_level_only)
    assert len(graph) > 50 and graph["tradingbot.algo.ppo"]  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_source_files_stay_under_the_line_limit(path: Path) -> None:
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_LINES, f"{path.relative_to(SRC)} has {n_lines} lines"


def private_reach_ins(tree: ast.Module, names: set[str]) -> list[str]:
    """``x._member`` accesses (dunders excepted) on a variable whose name or annotation marks
    it as the model: a name in ``names`` or a parameter annotated ``DistributionalPPO``."""
    models = set(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            if "DistributionalPPO" in ast.unparse(node.annotation):
                models.add(node.arg)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            owner = ast.unparse(node.value)
            if owner in models or owner.endswith((".model", "model")):
                found.append(f"{owner}.{node.attr} (line {node.lineno})")
    return found


def test_private_reach_in_detector_sees_an_annotated_parameter() -> None:
    tree = ast.parse("def f(m: DistributionalPPO):\n    m._obs_tensor(1)\n    m.__class__\n")
    assert private_reach_ins(tree, set()) == ["m._obs_tensor (line 2)"]


def test_no_module_outside_algo_uses_a_private_member_of_the_model() -> None:
    found = []
    for name, path in modules().items():
        if name.startswith("tradingbot.algo"):
            continue
        tree = ast.parse(path.read_text())
        found += [f"{name}: {hit}" for hit in private_reach_ins(tree, {"model", "algo"})]
    assert not found, "\n".join(found)
