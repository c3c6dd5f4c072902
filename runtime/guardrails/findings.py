"""What a guardrail reports: findings that name a kind of content, never the content."""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCKED_MESSAGE = "Content blocked by guardrail"


@dataclass(frozen=True)
class Finding:
    guardrail_key: str
    category: str  # email | phone | credit_card | iban | secret | denylist
    action: str  # block | redact | log
    message: str  # what kind of thing was found ("credit card number"), never the matched text


class GuardrailBlocked(Exception):
    """A guardrail whose action is ``block`` found something; ``str()`` is safe to show the client."""

    def __init__(self, guardrail_key: str, findings: list[Finding]) -> None:
        super().__init__(BLOCKED_MESSAGE)
        self.guardrail_key = guardrail_key
        self.action = "block"
        self.findings = list(findings)


@dataclass(frozen=True)
class Checked:
    text: str  # redacted when a ``redact`` guardrail found something; otherwise as given
    findings: list[Finding] = field(default_factory=list)
    blocked: GuardrailBlocked | None = None
