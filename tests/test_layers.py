"""The import contract (DESIGN.md, "Layout"): imports point down the pipeline only.

    errors, _yaml  ←  tokens  ←  policy, fleet  ←  engine  ←  web  ←  gateway, cli, demo

``telemetry`` sits beside the engine: the engine uses it, and it may import only
``engine.decision`` from the engine (a span describes a decision, never makes one).
Only the CLI and the demo import ``testing``. ``integrations/`` may import anything up
to ``web``. No module imports another module's ``_private`` name, and no modules import
each other in a cycle. Every import counts, including function-local and
``TYPE_CHECKING`` ones: a lazy import hides a cycle, it does not break it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "iamscope"

# Lower imports nothing higher. Same rank: free to import each other (no cycles).
RANKS: tuple[tuple[str, int], ...] = (
    ("iamscope.errors", 0),
    ("iamscope._yaml", 0),
    ("iamscope._fork", 0),
    ("iamscope.tokens", 1),
    ("iamscope.testing", 2),
    ("iamscope.policy", 2),
    ("iamscope.fleet", 2),  # shared revocations: beside the policy, under the engine
    ("iamscope.engine.decision", 3),
    ("iamscope.telemetry", 4),
    ("iamscope.engine", 5),
    ("iamscope.config", 5),
    ("iamscope.web", 6),
    ("iamscope.integrations", 6),
    ("iamscope.gateway", 7),
    ("iamscope.cli", 7),
    ("iamscope.demo", 7),
    ("iamscope", 8),  # the public API: re-exports from every layer
)

# Edges the ranks cannot express, each with its reason.
ALLOWED_UPWARD = {
    # config.py owns the file format: it hands each block to that block's parser. The
    # gateway's parser is a leaf (checked below), not the gateway app.
    ("iamscope.config", "iamscope.gateway.settings"),
}
# Leaves that sit in a higher package but import only from the bottom layers.
LEAVES = {
    "iamscope.gateway.settings": {"iamscope.errors", "iamscope._yaml", "iamscope.telemetry"},
}
TESTING_USERS = ("iamscope.cli", "iamscope.demo", "iamscope.testing")

# Private reaches tolerated for now, each with the reason it is still here.
ALLOWED_PRIVATE: set[tuple[str, str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str, known: dict[str, Path]) -> bool:
    return name in known


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for each iamscope import in a file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "iamscope":
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] != "iamscope":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if is_module(sub, known):
                    yield sub, "", node.lineno  # `from iamscope.engine import decision`
                else:
                    yield base, alias.name, node.lineno


def rank(name: str) -> int:
    for prefix, value in RANKS:
        if name == prefix or name.startswith(prefix + "."):
            return value
    raise AssertionError(f"{name} has no place in the layers: add it to RANKS")


def edges() -> list[tuple[str, str, str, int]]:
    known = modules()
    return [
        (name, target, imported, line)
        for name, path in known.items()
        for target, imported, line in imports(name, path, known)
        if target != name
    ]


def where(name: str, line: int) -> str:
    return f"{modules()[name].relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer() -> None:
    for name in modules():
        rank(name)


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{where(source, line)}: {source} (layer {rank(source)}) imports {target} "
        f"(layer {rank(target)})"
        for source, target, _, line in edges()
        if rank(target) > rank(source) and (source, target) not in ALLOWED_UPWARD
    ]
    assert not wrong, "\n".join(wrong)


def test_telemetry_imports_only_the_decision_from_the_engine() -> None:
    wrong = [
        f"{where(source, line)}: {source} imports {target}"
        for source, target, _, line in edges()
        if source.startswith("iamscope.telemetry")
        and (target == "iamscope.engine" or target.startswith("iamscope.engine."))
        and target != "iamscope.engine.decision"
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_and_the_demo_import_testing() -> None:
    wrong = [
        f"{where(source, line)}: {source} imports {target}"
        for source, target, _, line in edges()
        if target.startswith("iamscope.testing") and not source.startswith(TESTING_USERS)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_only_the_bottom_layers(leaf: str) -> None:
    allowed = LEAVES[leaf]
    wrong = [
        f"{where(source, line)}: {target}"
        for source, target, _, line in edges()
        if source == leaf and not any(target.startswith(a) for a in allowed)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names() -> None:
    wrong = [
        f"{where(source, line)}: {source} imports {target}.{imported}"
        for source, target, imported, line in edges()
        if imported.startswith("_")
        and not imported.startswith("__")
        and (source, target, imported) not in ALLOWED_PRIVATE
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for source, target, _, _ in edges():
        if target in graph:
            graph[source].add(target)
    cycles = _cycles(graph)
    assert not cycles, "\n".join("import each other in a cycle: " + ", ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_contract_test_sees_imports() -> None:
    """Guard against a parser that silently finds nothing."""
    found = {(s, t) for s, t, _, _ in edges()}
    assert ("iamscope.web.asgi", "iamscope.engine.engine") in found
    assert ("iamscope.telemetry.spans", "iamscope.engine.decision") in found
