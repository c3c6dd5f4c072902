"""What cannot be carried is ignored, and said (DESIGN.md, *Front doors*).

A front door translating a request for a model's upstream collects the request
fields that cannot reach that upstream (by path, with indices:
``reasoning.summary``, ``tools[7]``). Under ``unsupported_params: ignore`` (the
default) they are dropped and the answer names them in the
``x-plugway-ignored-params`` header; under ``refuse`` the request is refused
with one error naming every one of them, never one per try.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runtime.config import ModelConfig, OrganisationConfig, Settings, UnsupportedParams
from runtime.errors import GatewayError, unsupported_parameter

if TYPE_CHECKING:
    from runtime.gateway import Gateway
    from runtime.request import RequestContext

IGNORED_HEADER = "x-plugway-ignored-params"
log = logging.getLogger("plugway.frontdoors")


def unsupported_params_policy(settings: Settings, organisation: OrganisationConfig, model: ModelConfig) -> UnsupportedParams:
    """The model's own setting, else the organisation's, else the global one."""
    return model.unsupported_params or organisation.unsupported_params or settings.unsupported_params


def refusal(ignored: list[str]) -> GatewayError:
    named = ", ".join(ignored)
    return unsupported_parameter(
        named,
        f"This model's upstream cannot receive {named}; unsupported_params is 'refuse' for this request, "
        "so it is refused rather than answered without them.",
    )


def settle(ignored: list[str], policy: UnsupportedParams, *, request_id: str) -> dict[str, str]:
    """The response headers that name what was ignored; raises when the policy is to refuse."""
    if not ignored:
        return {}
    if policy == "refuse":
        raise refusal(ignored)
    log.info("request %s: ignored params %s", request_id, ", ".join(ignored))
    return {IGNORED_HEADER: ", ".join(ignored)}


def admitted_headers(gateway: Gateway, ctx: RequestContext, ignored: list[str]) -> dict[str, str]:
    """An admitted request's answer headers: its limits, and what was ignored. A refusal under
    ``refuse`` comes after admission: the holds admission took go at once (nothing was spent)."""
    policy = unsupported_params_policy(gateway.settings, ctx.organisation, ctx.model)
    try:
        return {**ctx.limits.headers(), **settle(ignored, policy, request_id=ctx.request_id)}
    except GatewayError:
        gateway.ledger.release(ctx)
        raise
