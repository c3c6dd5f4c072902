"""Every package the product imports is one it declares (not one that only arrives through another)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("runtime", "plugins", "mcp_servers", "workers")


def _imported_top_level_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], path)
    return found


def _declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalise(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in project["dependencies"]}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = _declared_distributions()
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for module, path in sorted(_imported_top_level_modules().items()):
        if module in sys.stdlib_module_names or module in PRODUCT:
            continue
        distributions = {_normalise(d) for d in providers.get(module, [])}
        assert distributions, f"{module} (imported in {path.relative_to(ROOT)}) is not installed"
        if not distributions & declared:
            undeclared.append(f"{module} ({', '.join(sorted(distributions))}) in {path.relative_to(ROOT)}")
    assert not undeclared, "imported but not declared in pyproject.toml: " + "; ".join(undeclared)
