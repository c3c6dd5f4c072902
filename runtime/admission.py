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
from datetime import UTC, datetime
from typing import Any, Protocol

from runtime.billing import insufficient_credits, month_bounds, plan_reservation, serving_prices
from runtime.config import ModelConfig, OrganisationConfig, Price, Settings
from runtime.errors import (
    GatewayError,
    insufficient_permissions,
    invalid_request,
    rate_limit_exceeded,
    rate_limiter_unavailable,
)
from runtime.guardrails import Guardrails
from runtime.limits import BudgetAsk, LimitDecision, Limiter, LimiterUnavailable
from runtime.limits.decision import UNLIMITED
from runtime.limits.reservation import Planned, Reservation
from runtime.request import DoorRules, PluginGrant, PluginRequest, RequestContext, ToolsContext
from runtime.storage.keys import KeyInfo
from runtime.telemetry import current as telemetry


class BudgetCheck(Protocol):
    async def check(
        self, organisation: OrganisationConfig, *, reserve_usd: float = 0.0, within_hold: int | None = None
    ) -> int | None:
        """Raise the 402 when the organisation's budget is spent; else hold ``reserve_usd`` (the hold's id)."""
        ...

    def release(self, organisation_id: str, hold_id: int | None) -> None: ...

    async def database_spend(self, organisation_id: str) -> float:
        """The month's spend as the database (and this process's unwritten rows) last showed it."""
        ...


class AdmissionServices(Protocol):
    """What admission needs from the gateway, and nothing more."""

    @property
    def budget(self) -> BudgetCheck: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def limiter(self) -> Limiter: ...

    def organisation(self, org_id: str) -> OrganisationConfig | None: ...

    def resolve_model(self, organisation: OrganisationConfig, model_id: str) -> ModelConfig: ...

    def guardrails_for(self, organisation: OrganisationConfig, keys: Sequence[str]) -> Guardrails | None: ...

    def configured_model(self, model_id: str) -> ModelConfig | None:
        """A configured model by its id (a fallback's price, say), or None."""
        ...


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
    endpoint: str | None = None,
    body: Any = None,
    prompt_parts: Sequence[Any] = (),
) -> RequestContext:
    """Admit one model request (see the module docstring for the order of the checks).

    ``plugins`` None means every plugin of the organisation; ``server_tools``
    False means none at all (a request that brought its own tools).
    ``check`` runs the door's own validation that needs the resolved context,
    before anything is spent. ``guardrails`` names the guardrails in force when the
    door has its own (an endpoint's); otherwise the door's rules decide. ``body``
    (and ``prompt_parts``, context the request carries elsewhere) size what the
    request holds of the budget and the key's daily tokens until it settles.
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
        endpoint=endpoint,
    )
    telemetry().admitted(
        request_id=request_id,
        organisation=organisation.id,
        model=model_config.id,
        key_id=context.key_id,
        source=door.source,
        endpoint=endpoint,
        capture_bodies=organisation.request_log.capture_bodies,
    )
    if check is not None:
        check(context)
    # billing: the request holds its most until accounting settles it (runtime/limits/reservation.py).
    # Sizing it reads the whole body: only done when there is a budget or a daily-token cap to hold.
    planned = (
        plan_reservation(
            services.settings, body, orchestrated=bool(grants), prompt_parts=prompt_parts, produces_output=door.produces_output
        )
        if holds_spending(door, organisation, key)
        else None
    )
    context.limits, context.reservation = await allow_spending(
        services,
        door,
        organisation,
        key,
        planned=planned,
        prices=serving_prices(model_config, services.configured_model),
    )
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
    telemetry().admitted(
        request_id=request_id,
        organisation=organisation.id,
        model=None,
        key_id=context.key_id,
        source=door.source,
        capture_bodies=organisation.request_log.capture_bodies,
    )
    # A tool call has no model to size: it holds nothing of the budget or the daily tokens.
    context.limits, _ = await allow_spending(services, door, organisation, key)
    return context


def holds_spending(door: DoorRules, organisation: OrganisationConfig, key: KeyInfo | None) -> bool:
    """Whether an admitted call through ``door`` holds a share of a monthly budget or of a
    daily-token cap (:func:`allow_spending`); with neither, what it plans is never read."""
    return door.billed and (
        (door.budget and organisation.monthly_budget_usd is not None)
        or (door.limits and key is not None and key.daily_tokens is not None)
    )


async def allow_spending(
    services: AdmissionServices,
    door: DoorRules,
    organisation: OrganisationConfig,
    key: KeyInfo | None,
    *,
    planned: Planned | None = None,
    prices: Sequence[Price | None] = (),
    within: Reservation | None = None,
) -> tuple[LimitDecision, Reservation | None]:
    """Steps 7 and 8: budget, then the key's limits, as the door's rules ask.

    ``planned`` (at ``prices``) is what the call holds of the budget and the key's daily
    tokens until accounting settles the returned :class:`Reservation` (None: nothing
    held). ``within`` is the reservation of the admitted call this one runs inside (MCP
    sampling): its own hold does not count against it.
    """
    reserve_usd = planned.cost_usd(prices) if planned is not None else 0.0
    reserve_tokens = planned.tokens if planned is not None else 0
    budget = organisation.monthly_budget_usd if door.budget else None
    limit_key = key if door.limits else None
    if budget is not None and services.limiter.holds_budgets:
        # billing: the budget is checked and held in the limiter's one script call, with the key's
        # limits, for every gateway process at once (runtime/limits/redis_backend.py).
        ask = BudgetAsk(organisation.id, budget, await services.budget.database_spend(organisation.id), reserve_usd)
        limits = await acquire_limits(
            services, limit_key, organisation, rpm=door.rpm, reserve_tokens=reserve_tokens, within=within, budget=ask
        )
        if limits.reservation_id is None:
            return limits, None
        return limits, Reservation(organisation.id, None, limits.reservation_id, budget_in_limiter=limits.budget_held)
    # Budget before limits: a refused request must not use up the key's RPM.
    budget_hold = (
        await services.budget.check(
            organisation, reserve_usd=reserve_usd, within_hold=within.budget_hold if within is not None else None
        )
        if budget is not None
        else None
    )
    try:
        limits = UNLIMITED
        if limit_key is not None:
            limits = await acquire_limits(services, limit_key, organisation, rpm=door.rpm, reserve_tokens=reserve_tokens, within=within)
    except BaseException:
        services.budget.release(organisation.id, budget_hold)
        raise
    if budget_hold is None and limits.reservation_id is None:
        return limits, None
    return limits, Reservation(organisation.id, budget_hold, limits.reservation_id)


def check_scope(key: KeyInfo | None, scope: str) -> None:
    """403 when the key's scopes do not cover this kind of call."""
    if key is not None and not key.allows_scope(scope):
        raise insufficient_permissions(f"This key may not be used for {scope} (its scopes: {', '.join(sorted(key.scopes or ()))}).")


def check_model_access(key: KeyInfo | None, model_id: str) -> None:
    """403 when the key's model allow-list leaves this model out."""
    if key is not None and not key.allows_model(model_id):
        raise insufficient_permissions(f"This key may not use model '{model_id}'.")


async def acquire_limits(
    services: AdmissionServices,
    key: KeyInfo | None,
    organisation: OrganisationConfig,
    *,
    rpm: bool = True,
    reserve_tokens: int = 0,
    within: Reservation | None = None,
    budget: BudgetAsk | None = None,
) -> LimitDecision:
    """The key's limits (and, with ``budget``, the organisation's budget held with them): 402, 429 or 503."""
    daily_tokens = key.daily_tokens if key is not None else None
    if budget is None and (key is None or (not rpm and daily_tokens is None)):
        return UNLIMITED
    # billing: a reservation bigger than the cap blocks as much as the cap (runtime/limits/reservation.py).
    reserve = min(reserve_tokens, daily_tokens) if daily_tokens is not None else 0
    try:
        decision = await services.limiter.acquire(
            # A keyless call (the WhatsApp worker) checks only its organisation's budget.
            key.id if key is not None else "-",
            rpm=key.rpm if rpm and key is not None else None,
            daily_tokens=daily_tokens,
            reserve_tokens=reserve,
            within_reservation=within.limit_id if within is not None else None,
            budget=budget,
        )
    except LimiterUnavailable:
        telemetry().limiter_unavailable("acquire")
        raise rate_limiter_unavailable() from None
    if decision.reason == "budget" and budget is not None:
        now = datetime.now(UTC)
        raise insufficient_credits(
            organisation.id, budget.budget_usd, budget.spent_usd, month_bounds(now)[1], held_usd=decision.budget_pending_usd
        )
    if key is not None:
        telemetry().limiter_decision(key.organisation_id, decision)
    if not decision.allowed:
        raise rate_limit_exceeded(
            decision.message(),
            limit_type="requests" if decision.reason == "rpm" else "tokens",
            headers=decision.headers(),
        )
    return decision
