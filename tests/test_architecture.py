"""The import graph keeps plugway's layers: no cycle, and the core never imports a feature.

Every ``import`` counts, wherever it is written: at the top, inside a function, or
under ``if TYPE_CHECKING:`` (a type-only import still means nobody can read the
lower layer without the higher one). ARCHITECTURE.md describes the layers.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "workers")

# From the bottom up; a module may import its own layer and the ones below. A module
# belongs to the layer of the longest prefix that names it. Everything not named here
# (front doors, endpoints, control plane, console, the app factory, the CLI, WhatsApp)
# is a feature, above the core, and may import anything in it.
LAYERS: tuple[tuple[str, ...], ...] = (
    # Foundation: settings, errors, storage and limit types, policy engines with no I/O of their own.
    (
        "runtime",
        "runtime.json_types",
        "runtime.json_schema",
        "runtime.errors",
        "runtime.text",
        "runtime.reasoning",
        "runtime.lazy",
        "runtime.futures",
        "runtime.prompt_template",
        "runtime.config",
        "runtime.mcp.bundled",
        "runtime.guardrails",
        "runtime.storage",
        "runtime.limits",
        "runtime.plugin_host",
        "runtime.orchestration.events",
        "runtime.orchestration.naming",
        "runtime.cli_output",
        # The provider kinds and their profiles: imports nothing of the runtime; the configuration reads it.
        "runtime.providers.registry",
    ),
    # The request's types: the leaf every layer above shares.
    ("runtime.request",),
    # Telemetry takes labels and counts, never orchestration objects; the request log is its store.
    ("runtime.telemetry", "runtime.requestlog"),
    # Talking to the outside: model providers, MCP servers, the budget.
    ("runtime.providers", "runtime.mcp", "runtime.billing"),
    # Deciding and doing: admission, the loop and its tools, sampling, accounting.
    ("runtime.orchestration", "runtime.admission", "runtime.accounting"),
    # The composition root every feature is handed.
    ("runtime.gateway",),
)
FEATURES = len(LAYERS)

# Upward imports not removed yet, each with why. The check fails on any other, and on
# an entry here that no longer happens (so the list only ever shrinks).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ours an imported name lives in (``runtime.x.Y`` -> ``runtime.x``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            owner = _owner(name)
            if owner is not None and owner != module:
                yield owner


GRAPH: dict[str, set[str]] = {module: set(_imported(module, path)) for module, path in MODULES.items()}


def layer_of(module: str) -> int:
    best, best_length = FEATURES, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix if prefix == "runtime" else (module == prefix or module.startswith(prefix + "."))
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    # Guards the check itself: an empty graph would pass everything.
    assert "runtime.gateway" in GRAPH and "workers.whatsapp.worker" in GRAPH
    assert "runtime.request" in GRAPH["runtime.admission"]


def test_no_module_imports_itself_back_through_others() -> None:
    found = cycles(GRAPH)
    assert not found, "import cycles (type-only imports count):\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_layer_imports_a_higher_one_and_the_core_imports_no_feature() -> None:
    upward = {
        (module, target)
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }
    unexpected = sorted(upward - KNOWN_UPWARD.keys())
    assert not unexpected, "upward imports:\n" + "\n".join(
        f"{module} (layer {layer_of(module)}) -> {target} (layer {layer_of(target)})" for module, target in unexpected
    )
    gone = sorted(KNOWN_UPWARD.keys() - upward)
    assert not gone, f"no longer imported, drop from KNOWN_UPWARD: {gone}"


@pytest.mark.parametrize(
    "module",
    ["runtime.admission", "runtime.request", "runtime.orchestration.loop", "runtime.providers.router", "runtime.mcp.manager",
     "runtime.limits", "runtime.storage.usage", "runtime.gateway"],
)
def test_the_core_is_below_every_feature(module: str) -> None:
    assert layer_of(module) < FEATURES
    for feature in ("runtime.frontdoors.chat.routes", "runtime.endpoints.pipeline", "runtime.control.routes.plugins",
                    "runtime.console.routes", "runtime.api.app", "workers.whatsapp.webhook", "workers.whatsapp.worker"):
        assert layer_of(feature) == FEATURES


def test_the_app_factory_names_no_feature_only_the_declared_list() -> None:
    assert "runtime.api.features" in GRAPH["runtime.api.app"]
    named = sorted(
        module for module in GRAPH["runtime.api.app"]
        if module.startswith(("runtime.frontdoors", "runtime.endpoints", "runtime.control", "runtime.console", "workers."))
    )
    assert not named, f"runtime/api/app.py imports features by name: {named}"


def test_the_request_types_import_only_the_foundation() -> None:
    reachable: set[str] = set()
    todo = ["runtime.request"]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in reachable:
                reachable.add(target)
                todo.append(target)
    above = sorted(target for target in reachable if layer_of(target) > 0)
    assert not above, f"runtime.request reaches above the foundation: {above}"


def test_every_path_architecture_md_names_exists() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`((?:runtime|workers|tests|mcp_servers|plugins)/[\w./]*)`", text))
    assert len(named) > 30  # the check reads the file it is meant to read
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"
