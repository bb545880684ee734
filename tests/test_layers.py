"""The package's two layers, read from the source: the teaching core imports neither the harness nor
the classroom tools, the classroom tools never import the harness, and no module imports itself back
through others. Every ``import`` counts, those inside functions too, so a cycle cannot hide in one."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scratchmlm"
HARNESS, CLASSROOM = "scratchmlm.harness", "scratchmlm.classroom"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from . import x`` counts as module ``x``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in modules and target != name}
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): imported_modules(path, modules) for path in paths}
    # ``scratchmlm`` itself imports nothing at import time (PEP 562: its names load on first use);
    # ``from scratchmlm import __version__`` reads that constant, it does not climb a layer.
    graph.pop("scratchmlm", None)
    return {module: {target for target in targets if target != "scratchmlm"} for module, targets in graph.items()}


def layer(module: str) -> str:
    if module.startswith(HARNESS) or module == "scratchmlm.__main__":    # __main__ starts the command line
        return "harness"
    if module.startswith(CLASSROOM):
        return "classroom"
    return "core"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the list of modules along it."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def back_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer up: core -> harness or classroom, classroom -> harness."""
    allowed = {"core": {"core"}, "classroom": {"core", "classroom"}, "harness": {"core", "classroom", "harness"}}
    return [f"{module} -> {target}" for module, targets in sorted(graph.items()) for target in sorted(targets)
            if layer(target) not in allowed[layer(module)]]


GRAPH = import_graph()


def test_the_graph_is_read_from_every_module():
    assert {"scratchmlm.masking", "scratchmlm.model.attention", "scratchmlm.harness.trainer",
            "scratchmlm.classroom.checks.grade"} <= set(GRAPH)
    assert "scratchmlm.masking" in GRAPH["scratchmlm.harness.build"]          # a relative import, two dots
    assert "scratchmlm.harness.run_dir" in GRAPH["scratchmlm.harness.hf"]     # a sibling import, one dot
    assert "scratchmlm.classroom.checks.grade" in GRAPH["scratchmlm.harness.cli"]   # inside a function


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    assert back_imports(GRAPH) == []


def test_the_teaching_core_is_the_top_level_of_the_package():
    core = sorted(module for module in GRAPH if layer(module) == "core")
    for concept in ("corpus", "tokenizer", "batches", "masking", "model.attention", "step", "noam", "evaluate",
                    "sample", "loop"):
        assert f"scratchmlm.{concept}" in core


@pytest.mark.parametrize("source, problem", [
    ({"a.py": "from .b import x\n", "b.py": "def f():\n    from .a import y\n"}, "cycle"),
    ({"a.py": "from .harness.run import go\n", "harness/__init__.py": "", "harness/run.py": ""}, "back"),
    ({"classroom/__init__.py": "", "classroom/c.py": "def f():\n    from ..harness import cli\n",
      "harness/__init__.py": "", "harness/cli.py": ""}, "back"),
])
def test_the_checks_find_a_planted_problem(tmp_path, monkeypatch, source, problem):
    root = tmp_path / "scratchmlm"
    for name, text in source.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "__init__.py").touch()
    monkeypatch.setattr(__import__(__name__), "PACKAGE", root)
    graph = import_graph(root)
    assert (cycles(graph) if problem == "cycle" else back_imports(graph))
