"""Guardrails: find personal data, secrets and denylisted text; block, redact or log it.

Operators configure them per organisation (``organisations[].guardrails[]``,
see :class:`GuardrailConfig`); endpoints and the OpenAI/Anthropic-compatible
routes name the ones in force. ``Guardrails.from_config(configs, keys)`` builds
them once per request from compiled, shared detectors:

- ``check_text(text, stage)`` and ``check_messages(messages, stage)`` for whole texts;
- ``stream_redactor(stage)`` for streamed output (never sends part of a match);
- ``record_hits(engine, rows)`` stores what was found, never the content.

Placeholders: ``[EMAIL]``, ``[PHONE]``, ``[CREDIT_CARD]``, ``[IBAN]``,
``[SECRET]``, and ``[REDACTED]`` for denylists. What each category detects is
documented in :mod:`runtime.guardrails.detectors`; the rules for denylist
patterns in :mod:`runtime.guardrails.patterns`; how streams are held back in
:mod:`runtime.guardrails.stream`.
"""

from typing import TYPE_CHECKING

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from runtime.guardrails.config import STAGES, Action, GuardrailConfig, Stage
    from runtime.guardrails.detectors import (
        DEFAULT_PHONE_REGIONS,
        PII_CATEGORIES,
        PLACEHOLDERS,
        PiiCategory,
    )
    from runtime.guardrails.engine import Guardrails
    from runtime.guardrails.findings import BLOCKED_MESSAGE, Checked, Finding, GuardrailBlocked
    from runtime.guardrails.records import GuardrailEvent, hit_rows, record_hits
    from runtime.guardrails.stream import StreamRedactor

__getattr__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["STAGES", "Action", "GuardrailConfig", "Stage"], "runtime.guardrails.config"),
        **dict.fromkeys(
            ["DEFAULT_PHONE_REGIONS", "PII_CATEGORIES", "PLACEHOLDERS", "PiiCategory"], "runtime.guardrails.detectors"
        ),
        "Guardrails": "runtime.guardrails.engine",
        **dict.fromkeys(["BLOCKED_MESSAGE", "Checked", "Finding", "GuardrailBlocked"], "runtime.guardrails.findings"),
        **dict.fromkeys(["GuardrailEvent", "hit_rows", "record_hits"], "runtime.guardrails.records"),
        "StreamRedactor": "runtime.guardrails.stream",
    },
)

__all__ = [
    "BLOCKED_MESSAGE",
    "DEFAULT_PHONE_REGIONS",
    "PII_CATEGORIES",
    "PLACEHOLDERS",
    "STAGES",
    "Action",
    "Checked",
    "Finding",
    "GuardrailBlocked",
    "GuardrailConfig",
    "GuardrailEvent",
    "Guardrails",
    "PiiCategory",
    "Stage",
    "StreamRedactor",
    "hit_rows",
    "record_hits",
]
