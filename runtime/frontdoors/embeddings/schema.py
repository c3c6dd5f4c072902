"""The embeddings request as OpenAI defines it, checked by hand (one clear 400 per mistake).

``input`` is a string, a list of strings, a list of token ids, or a list of
such lists: at most 2,048 inputs, none empty. ``encoding_format`` is
``float`` (default) or ``base64`` (little-endian float32, as OpenAI sends it;
the official SDKs ask for it by default and decode it themselves).
``dimensions`` is a positive whole number, ``user`` a string. Other fields go
to the provider as they are (OpenAI-compatible servers take their own
extensions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from runtime.errors import invalid_request
from runtime.json_types import JSON
from runtime.limits.reservation import estimated_tokens as estimate_tokens

MAX_INPUTS = 2048
MAX_DIMENSIONS = 65536
# Characters per input: well beyond any model's context; a bound on what one request may make us hash or send.
MAX_INPUT_CHARS = 1_000_000


class EmbeddingRequestSchema(BaseModel):
    """For the OpenAPI document only: the route validates bodies itself (see :func:`parse_embedding_request`)."""

    model: str
    input: str | list[str] | list[int] | list[list[int]] = Field(description="Text, texts, token ids, or lists of token ids.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str | list[int]]  # one entry per vector asked for
    encoding_format: str
    dimensions: int | None
    body: JSON  # what goes upstream (``model`` replaced by the router)

    @property
    def estimated_tokens(self) -> int:
        """Billable tokens when a provider reports no usage: token ids counted, text at plugway's estimate."""
        return sum(len(item) if isinstance(item, list) else max(1, estimate_tokens(len(item))) for item in self.inputs)


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        items: list[Any] = [value]
    elif _is_token_ids(value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise invalid_request("'input' must be a string, a list of strings, a list of token ids, or a list of such lists, and not empty.", param="input")
    if len(items) > MAX_INPUTS:
        raise invalid_request(f"'input' has {len(items)} entries; at most {MAX_INPUTS} per request.", param="input")
    for index, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise invalid_request(f"'input[{index}]' is empty.", param="input")
            if len(item) > MAX_INPUT_CHARS:
                raise invalid_request(f"'input[{index}]' is longer than {MAX_INPUT_CHARS} characters.", param="input")
        elif not _is_token_ids(item):
            raise invalid_request(
                f"'input[{index}]' must be a non-empty string or a non-empty list of token ids (whole numbers, 0 or more).", param="input"
            )
    return items


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("you must provide a model parameter", param="model")
    if "input" not in body:
        raise invalid_request("'input' is required.", param="input")
    inputs = _inputs(body["input"])
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ("float", "base64"):
        raise invalid_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= MAX_DIMENSIONS):
        raise invalid_request(f"'dimensions' must be a whole number from 1 to {MAX_DIMENSIONS}.", param="dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid_request("'user' must be a string.", param="user")
    upstream = {k: v for k, v in body.items() if v is not None}
    upstream["encoding_format"] = encoding_format
    return EmbeddingRequest(model=model, inputs=inputs, encoding_format=encoding_format, dimensions=dimensions, body=upstream)
