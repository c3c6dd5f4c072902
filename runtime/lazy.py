"""Lazy package exports (PEP 562): a package names what it exports without importing it.

``plugway keys create`` and the other short commands start in a fraction of a
second because importing ``runtime.guardrails.config`` or
``runtime.endpoints.cli`` no longer drags the web stack in through the
package's ``__init__``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``exports[name]`` (a module path) on first use of ``name``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
