"""System prompts with ``{{variable}}`` slots, filled from a request's ``variables``.

Deliberately not a template language: no expressions, no loops, nothing a
caller's variables could execute. A slot whose variable is missing is an error
naming it; ``{{ name }}`` may have spaces; values are inserted as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SLOT = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")


class MissingVariable(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"The system prompt needs the variable '{name}'; pass it in 'variables'.")
        self.name = name


def slots(template: str) -> list[str]:
    return list(dict.fromkeys(_SLOT.findall(template)))


def render(template: str, variables: Mapping[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables or variables[name] is None:
            raise MissingVariable(name)
        return str(variables[name])

    return _SLOT.sub(fill, template)
