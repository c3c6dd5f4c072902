"""Guardrails in force for one request: check text, messages and streams."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from runtime.guardrails.config import STAGES, GuardrailConfig, Stage
from runtime.guardrails.detectors import Detector, find
from runtime.guardrails.findings import Checked, Finding, GuardrailBlocked
from runtime.guardrails.normalise import normalise
from runtime.guardrails.stream import GuardrailStream, StreamRedactor, render

# Which messages each stage reads. The system prompt is input like any other text:
# check the caller's messages before an endpoint's own prompt is applied.
_ROLES: dict[str, frozenset[str]] = {
    "input": frozenset({"system", "developer", "user", "assistant"}),
    "output": frozenset({"assistant"}),
    "tool_results": frozenset({"tool", "function"}),
}
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


class _Guardrail:
    def __init__(self, config: GuardrailConfig) -> None:
        self.key = config.key
        self.action = config.action
        self.stages = frozenset(config.apply_to)
        self.detectors: tuple[Detector, ...] = config.detectors()

    def run(self, text: str) -> tuple[str, list[Finding]]:
        """The text as this guardrail leaves it, and what it found (before acting on a block)."""
        current = text
        view = normalise(current)  # what detectors read (see runtime.guardrails.normalise)
        findings: list[Finding] = []
        for detector in self.detectors:
            hits = find(detector, view)
            if hits:
                findings += [
                    Finding(self.key, detector.category, self.action, hit.message) for hit in hits
                ]
                # Later detectors see the placeholders, so one secret is not also reported as a phone number.
                current = render(current, 0, len(current), hits, detector.placeholder)
                view = normalise(current)
        return (current if self.action == "redact" else text), findings


class Guardrails:
    """The guardrails named for an endpoint or a route, applied in the order named."""

    def __init__(self, guardrails: Sequence[_Guardrail]) -> None:
        self._guardrails = list(guardrails)

    @classmethod
    def from_config(cls, configs: Iterable[GuardrailConfig], keys: Iterable[str]) -> Guardrails:
        by_key = {config.key: config for config in configs}
        chosen: list[_Guardrail] = []
        for key in keys:
            if key not in by_key:
                raise ValueError(
                    f"unknown guardrail {key!r}; configured: {', '.join(sorted(by_key)) or 'none'}"
                )
            chosen.append(_Guardrail(by_key[key]))
        return cls(chosen)

    @property
    def keys(self) -> list[str]:
        return [guardrail.key for guardrail in self._guardrails]

    def __bool__(self) -> bool:
        return bool(self._guardrails)

    def applies_to(self, stage: Stage) -> bool:
        _check_stage(stage)
        return any(stage in guardrail.stages for guardrail in self._guardrails)

    def check_text(self, text: str, stage: Stage) -> Checked:
        """Every guardrail for this stage in order; a block stops there and is returned, not raised."""
        _check_stage(stage)
        findings: list[Finding] = []
        for guardrail in self._guardrails:
            if stage not in guardrail.stages:
                continue
            changed, found = guardrail.run(text)
            findings += found
            if found and guardrail.action == "block":
                return Checked(text, findings, GuardrailBlocked(guardrail.key, found))
            text = changed
        return Checked(text, findings)

    def checker(self, stage: Stage, findings: list[Finding]) -> Callable[[str], str]:
        """:meth:`check_text` as a function of the text: it returns the text (redacted or not),
        adds what it found to ``findings``, and raises GuardrailBlocked on a block."""

        def check(text: str) -> str:
            checked = self.check_text(text, stage)
            findings.extend(checked.findings)
            if checked.blocked is not None:
                raise checked.blocked
            return checked.text

        return check

    def check_messages(
        self, messages: list[dict[str, Any]], stage: Stage = "input"
    ) -> tuple[list[dict[str, Any]], list[Finding]]:
        """OpenAI chat messages with every text of the stage's roles checked; raises GuardrailBlocked.

        Reads string contents and text parts; ``input`` reads system, developer, user and
        assistant messages, ``output`` assistant messages, ``tool_results`` tool messages.
        The messages given are never changed: changed ones come back as copies.
        """
        _check_stage(stage)
        roles = _ROLES[stage]
        checked: list[dict[str, Any]] = []
        findings: list[Finding] = []
        for message in messages:
            if not (
                self.applies_to(stage)
                and isinstance(message, dict)
                and message.get("role") in roles
            ):
                checked.append(message)
                continue
            content = message.get("content")
            if isinstance(content, str):
                text, found = self._checked(content, stage)
                findings += found
                checked.append(message if text == content else {**message, "content": text})
            elif isinstance(content, list):
                parts, changed = [], False
                for part in content:
                    if (
                        isinstance(part, dict)
                        and part.get("type") in _TEXT_PART_TYPES
                        and isinstance(part.get("text"), str)
                    ):
                        text, found = self._checked(part["text"], stage)
                        findings += found
                        if text != part["text"]:
                            part, changed = {**part, "text": text}, True
                    parts.append(part)
                checked.append({**message, "content": parts} if changed else message)
            else:
                checked.append(message)
        return checked, findings

    def _checked(self, text: str, stage: Stage) -> tuple[str, list[Finding]]:
        result = self.check_text(text, stage)
        if result.blocked is not None:
            raise result.blocked
        return result.text, result.findings

    def stream_redactor(self, stage: Stage = "output") -> StreamRedactor:
        _check_stage(stage)
        return StreamRedactor(
            [
                GuardrailStream(guardrail.key, guardrail.action, guardrail.detectors)
                for guardrail in self._guardrails
                if stage in guardrail.stages
            ]
        )


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown guardrail stage {stage!r}; one of {', '.join(STAGES)}")
