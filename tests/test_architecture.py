"""The shape of the package: imports flow one way, no module grows into two concerns.

docs/architecture.md draws the folders and the direction of the flow; these
tests keep the tree honest about it. They read the source with ``ast`` and do
not import anything, so a circle shows up here before it bites at run time.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailer"
DOC = PACKAGE.parent / "docs" / "architecture.md"

#: The layers, top to bottom. A module may import its own layer or any below,
#: never one above. Core (config, clock, logs, tls) is the floor.
LAYERS = [
    {"mailer.cli", "mailer.__main__"},
    {"mailer.app"},
    {"mailer.web"},
    {"mailer.desk"},
    {"mailer.newsletter"},
    {"mailer.inbound"},
    {"mailer.rules", "mailer.topics"},
    {"mailer.outbound"},
    {"mailer.store"},
    {"mailer.config", "mailer.clock", "mailer.logs", "mailer.tls", "mailer"},
]
MAX_LINES = 600
MAX_TOP_LEVEL_FILES = 8


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The mailer modules that ``name`` imports, at any depth of its code."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from mailer.x import y" imports the module mailer.x.y when there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    for depth, layer in enumerate(LAYERS):
        if any(name == top or name.startswith(top + ".") for top in layer if top != "mailer"):
            return depth
    assert name == "mailer", f"{name} is in no layer: add its folder to LAYERS and docs/architecture.md"
    return len(LAYERS) - 1


def test_no_module_imports_itself_back_through_a_circle():
    """Depth-first search for a back edge: any circle is named, module by module."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        stack.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                circle = stack[stack.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_imports_flow_downwards_through_the_layers():
    upward = [f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets
              if layer_of(target) < layer_of(name)]
    assert not upward, "imports pointing up the flow:\n" + "\n".join(sorted(upward))


def test_the_circle_detector_finds_a_circle():
    """The check above can fail: a made-up graph with a circle is caught."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    seen, open_ = set(), set()

    def has_circle(node):
        open_.add(node)
        for nxt in graph[node]:
            if nxt in open_ or (nxt not in seen and has_circle(nxt)):
                return True
        open_.discard(node)
        seen.add(node)
        return False

    assert has_circle("a")
    # ... and the real parser sees the real edges (the service registers handlers).
    assert "mailer.inbound.pipeline" in GRAPH["mailer.app.service"]


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_the_package_root_holds_only_the_core():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_FILES, top


def test_comments_say_why_not_when():
    """No comment or docstring points at an issue number or the order things were built."""
    pattern = re.compile(r"#.*\bissue\s*\d|\(issue\s*\d+\)|--\s*issue\s*\d", re.IGNORECASE)
    hits = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
            for path in MODULES.values()
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_architecture_doc_names_every_folder_and_module():
    """docs/architecture.md matches the tree: every module file is named in it."""
    text = DOC.read_text(encoding="utf-8")
    missing = [str(path.relative_to(PACKAGE)) for path in MODULES.values()
               if path.name not in ("__init__.py", "__main__.py")
               and str(path.relative_to(PACKAGE)) not in text]
    assert not missing, f"docs/architecture.md does not mention: {missing}"
