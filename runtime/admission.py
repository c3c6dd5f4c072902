"""Admission: everything decided about a request before anything is spent, done once, in one order.

Every entry point goes through here: the five front doors (chat completions,
Responses, Messages with ``count_tokens``, embeddings, ``/mcp``), endpoints, the
console's playground and tool call, the WhatsApp worker, and MCP sampling. The
order, for all of them:

1. authentication (401) — the route's dependency, before admission is called;
2. organisation (403);
3. scope: the key's scopes cover the door's (403);
4. model (404) and the key's model allow-list (403);
5. eligible plugins (400);
6. the door's own checks, which need the resolved context (400/422);
7. budget (402): before limits, so a refused request does not use up the key's RPM;
8. rate limits (429, or 503 when the limiter is unreachable);
9. guardrails on input — run by the loop (or the endpoint pipeline, before its prompt),
   with the guardrails admission put in the context.

What differs between doors is data the door passes in (:class:`DoorRules`), never a
name admission compares. Sampling, inside an admitted call, enters at step 7
(:func:`allow_spending`). The runtime takes the context; nothing below looks the
key, organisation or model up again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from runtime.config import ModelConfig, OrganisationConfig
from runtime.errors import (
    GatewayError,
    insufficient_permissions,
    invalid_request,
    rate_limit_exceeded,
    rate_limiter_unavailable,
)
from runtime.guardrails import Guardrails
from runtime.limits import LimitDecision, Limiter, LimiterUnavailable
from runtime.limits.decision import UNLIMITED
from runtime.request import DoorRules, PluginGrant, PluginRequest, RequestContext, ToolsContext
from runtime.storage.keys import KeyInfo
from runtime.telemetry import current as telemetry


class BudgetCheck(Protocol):
    async def check(self, organisation: OrganisationConfig) -> None:
        """Raise the 402 when the organisation's budget is spent."""
        ...


class AdmissionServices(Protocol):
    """What admission needs from the gateway, and nothing more."""

    @property
    def budget(self) -> BudgetCheck: ...

    @property
    def limiter(self) -> Limiter: ...

    def organisation(self, org_id: str) -> OrganisationConfig | None: ...

    def resolve_model(self, organisation: OrganisationConfig, model_id: str) -> ModelConfig: ...

    def guardrails_for(self, organisation: OrganisationConfig, keys: Sequence[str]) -> Guardrails | None: ...


def organisation_not_configured() -> GatewayError:
    return GatewayError(
        403, "This key's organisation is no longer configured.", code="organisation_not_configured", type="permission_error"
    )


def grants_for(
    organisation: OrganisationConfig, requested: Sequence[PluginRequest] | None
) -> tuple[PluginGrant, ...]:
    """The plugins a request may use: all the organisation's, or the ones it names (each must be configured)."""
    if requested is None:
        return tuple(PluginGrant(ref) for ref in organisation.plugins)
    grants: list[PluginGrant] = []
    for wanted in requested:
        ref = organisation.plugin(wanted.plugin_id)
        if ref is None:
            raise invalid_request(
                f"Plugin '{wanted.plugin_id}' is not configured for this organisation.", param=wanted.param
            )
        grants.append(PluginGrant(ref, wanted.allowed_tools, wanted.approval))
    return tuple(grants)


def organisation_of(services: AdmissionServices, key: KeyInfo | None, organisation_id: str | None) -> OrganisationConfig:
    """Step 2: the organisation asking (the key's, or the one a keyless caller names)."""
    org_id = organisation_id or (key.organisation_id if key is not None else None)
    organisation = services.organisation(org_id) if org_id else None
    if organisation is None:
        raise organisation_not_configured()
    return organisation


async def admit(
    services: AdmissionServices,
    door: DoorRules,
    *,
    key: KeyInfo | None,
    request_id: str,
    model: str,
    plugins: Sequence[PluginRequest] | None,
    organisation_id: str | None = None,
    server_tools: bool = True,
    check: Callable[[RequestContext], None] | None = None,
    guardrails: Sequence[str] | None = None,
) -> RequestContext:
    """Admit one model request (see the module docstring for the order of the checks).

    ``plugins`` None means every plugin of the organisation; ``server_tools``
    False means none at all (a request that brought its own tools).
    ``check`` runs the door's own validation that needs the resolved context,
    before anything is spent. ``guardrails`` names the guardrails in force when the
    door has its own (an endpoint's); otherwise the door's rules decide.
    """
    organisation = organisation_of(services, key, organisation_id)
    check_scope(key, door.scope)
    model_config = services.resolve_model(organisation, model)
    check_model_access(key, model_config.id)
    grants = grants_for(organisation, plugins) if server_tools else ()
    if guardrails is None:
        guardrails = organisation.guardrails_default if door.guardrails_default else ()
    context = RequestContext(
        request_id=request_id,
        organisation=organisation,
        model=model_config,
        key=key,
        door=door,
        plugins=grants,
        guardrails=services.guardrails_for(organisation, guardrails),
    )
    telemetry().admitted(
        request_id=request_id, organisation=organisation.id, model=model_config.id, key_id=context.key_id, source=door.source
    )
    if check is not None:
        check(context)
    context.limits = await allow_spending(services, door, organisation, key)
    return context


async def admit_tools(
    services: AdmissionServices,
    door: DoorRules,
    *,
    key: KeyInfo | None,
    request_id: str,
    organisation_id: str | None = None,
    plugins: Sequence[PluginRequest] | None = None,
) -> ToolsContext:
    """Admit a direct tool call (no model): the same steps, without the model's."""
    organisation = organisation_of(services, key, organisation_id)
    check_scope(key, door.scope)
    context = ToolsContext(
        request_id=request_id, organisation=organisation, key=key, door=door, plugins=grants_for(organisation, plugins)
    )
    telemetry().admitted(request_id=request_id, organisation=organisation.id, model=None, key_id=context.key_id, source=door.source)
    context.limits = await allow_spending(services, door, organisation, key)
    return context


async def allow_spending(
    services: AdmissionServices, door: DoorRules, organisation: OrganisationConfig, key: KeyInfo | None
) -> LimitDecision:
    """Steps 7 and 8: budget, then the key's limits, as the door's rules ask."""
    # Budget before limits: a refused request must not use up the key's RPM.
    if door.budget:
        await services.budget.check(organisation)
    if not door.limits or key is None:
        return UNLIMITED
    return await acquire_limits(services, key, rpm=door.rpm)


def check_scope(key: KeyInfo | None, scope: str) -> None:
    """403 when the key's scopes do not cover this kind of call."""
    if key is not None and not key.allows_scope(scope):
        raise insufficient_permissions(f"This key may not be used for {scope} (its scopes: {', '.join(sorted(key.scopes or ()))}).")


def check_model_access(key: KeyInfo | None, model_id: str) -> None:
    """403 when the key's model allow-list leaves this model out."""
    if key is not None and not key.allows_model(model_id):
        raise insufficient_permissions(f"This key may not use model '{model_id}'.")


async def acquire_limits(services: AdmissionServices, key: KeyInfo, *, rpm: bool = True) -> LimitDecision:
    if not rpm and key.daily_tokens is None:
        return UNLIMITED
    try:
        decision = await services.limiter.acquire(key.id, rpm=key.rpm if rpm else None, daily_tokens=key.daily_tokens)
    except LimiterUnavailable:
        telemetry().limiter_unavailable("acquire")
        raise rate_limiter_unavailable() from None
    telemetry().limiter_decision(key.organisation_id, decision)
    if not decision.allowed:
        raise rate_limit_exceeded(
            decision.message(),
            limit_type="requests" if decision.reason == "rpm" else "tokens",
            headers=decision.headers(),
        )
    return decision
