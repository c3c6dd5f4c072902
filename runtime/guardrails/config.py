"""One guardrail as the operator writes it (``organisations[].guardrails[]``)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.guardrails.detectors import (
    DEFAULT_PHONE_REGIONS,
    PII_CATEGORIES,
    Detector,
    PiiCategory,
    denylist_detectors,
    pii_detectors,
    valid_phone_region,
)
from runtime.guardrails.patterns import PatternRefused, compile_pattern

Stage = Literal["input", "output", "tool_results"]
Action = Literal["block", "redact", "log"]

STAGES: tuple[Stage, ...] = ("input", "output", "tool_results")
MAX_TERM_CHARS = 200
MAX_TERMS = 1000


class GuardrailConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)
    kind: Literal["pii", "denylist"]
    action: Action
    apply_to: list[Stage] = Field(default_factory=lambda: list(STAGES))
    # pii: which categories (default: all of them) and the regions national phone numbers are read for.
    categories: list[PiiCategory] | None = None
    phone_regions: list[str] | None = None
    # denylist: whole words or phrases (any case) and regular expressions.
    terms: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("apply_to")
    @classmethod
    def _stages(cls, stages: list[Stage]) -> list[Stage]:
        if not stages:
            raise ValueError("name at least one of input, output, tool_results")
        return list(dict.fromkeys(stages))

    @field_validator("categories")
    @classmethod
    def _categories(cls, categories: list[PiiCategory] | None) -> list[PiiCategory] | None:
        if categories is not None and not categories:
            raise ValueError(
                f"name at least one category ({', '.join(PII_CATEGORIES)}) or leave it out for all"
            )
        return list(dict.fromkeys(categories)) if categories else categories

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, regions: list[str] | None) -> list[str] | None:
        if regions is None:
            return None
        if not regions:
            raise ValueError(
                "name at least one region (two-letter code such as US) or leave it out"
            )
        upper = [region.upper() for region in regions]
        unknown = [region for region in upper if not valid_phone_region(region)]
        if unknown:
            raise ValueError(
                f"unknown phone region {unknown[0]!r}; use two-letter codes such as US, GB, DE"
            )
        return list(dict.fromkeys(upper))

    @field_validator("terms")
    @classmethod
    def _terms(cls, terms: list[str]) -> list[str]:
        if len(terms) > MAX_TERMS:
            raise ValueError(f"at most {MAX_TERMS} terms")
        for number, term in enumerate(terms, 1):
            if not term.strip():
                raise ValueError(f"term {number} is empty")
            if len(term) > MAX_TERM_CHARS:
                raise ValueError(f"term {number} is longer than {MAX_TERM_CHARS} characters")
        return terms

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for number, source in enumerate(patterns, 1):
            try:
                compile_pattern(source)
            except PatternRefused as exc:
                raise ValueError(f"pattern {number} ('{source}') {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        if self.kind == "pii":
            if self.terms or self.patterns:
                raise ValueError("terms and patterns belong to kind 'denylist', not 'pii'")
        else:
            if self.categories is not None or self.phone_regions is not None:
                raise ValueError(
                    "categories and phone_regions belong to kind 'pii', not 'denylist'"
                )
            if not self.terms and not self.patterns:
                raise ValueError("a denylist needs terms or patterns")
        return self

    def detectors(self) -> tuple[Detector, ...]:
        """The compiled detectors, built once per distinct configuration and shared."""
        if self.kind == "pii":
            return pii_detectors(
                tuple(self.categories or PII_CATEGORIES),
                tuple(self.phone_regions or DEFAULT_PHONE_REGIONS),
            )
        return denylist_detectors(tuple(self.terms), tuple(self.patterns))
