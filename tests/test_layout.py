"""The spine's layout rules, checked on the source (DESIGN §3): no import cycle between modules
(lazy imports inside functions included), calculations never reach up into generation or
training, and no module switches matplotlib's backend."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "mame_eval"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """mame_eval modules imported anywhere in ``path`` (top level or inside functions; not
    under ``if TYPE_CHECKING:``, which is never executed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("mame_eval"):
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    g = nx.DiGraph()
    for path in files:
        source = _module_name(path)
        g.add_node(source)
        for target in _imports(path, modules):
            # a package's __init__ re-exporting its own modules is not a dependency cycle
            if target != source and not target.startswith(source + ".") \
                    and not source.startswith(target + ".") and target != "mame_eval":
                g.add_edge(source, target)
    return g


def test_no_import_cycle(graph):
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


@pytest.mark.parametrize("package", ["mame_eval.metrics", "mame_eval.xai", "mame_eval.stats"])
def test_calculations_do_not_generate_train_or_write_reports(graph, package):
    forbidden = ("mame_eval.generation", "mame_eval.training", "mame_eval.journeys",
                 "mame_eval.reports", "mame_eval.studies", "mame_eval.cli")
    bad = [(s, t) for s, t in graph.edges if s.startswith(package)
           and t.startswith(forbidden)]
    assert not bad, bad


def test_no_global_backend_switch():
    offenders = [str(p) for p in ROOT.rglob("*.py")
                 if "matplotlib.use(" in p.read_text(encoding="utf-8")
                 or "import matplotlib.pyplot" in p.read_text(encoding="utf-8")]
    assert not offenders, offenders
