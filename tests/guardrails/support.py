"""Small helpers shared by the guardrail tests."""

from __future__ import annotations

from typing import Any

from runtime.guardrails import Finding, GuardrailConfig, Guardrails


def guardrails(*entries: dict[str, Any]) -> Guardrails:
    configs = [GuardrailConfig.model_validate(entry) for entry in entries]
    return Guardrails.from_config(configs, [config.key for config in configs])


def pii(action: str = "redact", **extra: Any) -> dict[str, Any]:
    return {"key": "pii", "kind": "pii", "action": action, **extra}


def redacted(text: str, *categories: str, **extra: Any) -> str:
    chosen = {"categories": list(categories)} if categories else {}
    return guardrails(pii(**chosen, **extra)).check_text(text, "input").text


def found(text: str, *categories: str) -> list[Finding]:
    chosen = {"categories": list(categories)} if categories else {}
    return guardrails(pii("log", **chosen)).check_text(text, "input").findings


def streamed(g: Guardrails, chunks: list[str], stage: str = "output") -> tuple[str, list[str]]:
    """The whole streamed output and the pieces ``feed``/``finish`` returned."""
    redactor = g.stream_redactor(stage)  # type: ignore[arg-type]
    pieces = [redactor.feed(chunk) for chunk in chunks]
    pieces.append(redactor.finish())
    return "".join(pieces), pieces
