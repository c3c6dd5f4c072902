"""Admission: everything decided about a request before the model is called, done once.

Every front door (chat completions, Responses, Messages, ``/mcp``, endpoints,
the WhatsApp worker) turns its request into the same :class:`RequestContext`
through :func:`admit`, in one order: organisation (403), model (404),
eligible plugins (400), the front door's own checks, budget (402), rate
limits (429, or 503 when the limiter is unreachable). The runtime takes the
context; nothing below looks the key, organisation or model up again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.billing import Reservation, plan_reservation, serving_prices
from runtime.config import ModelConfig, OrganisationConfig, PluginRef
from runtime.errors import (
    GatewayError,
    insufficient_permissions,
    invalid_request,
    rate_limit_exceeded,
    rate_limiter_unavailable,
)
from runtime.limits import LimitDecision, LimiterUnavailable
from runtime.limits.decision import UNLIMITED
from runtime.storage.keys import KeyInfo
from runtime.telemetry import current as telemetry

if TYPE_CHECKING:
    from runtime.gateway import Gateway
    from runtime.guardrails import Guardrails


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """Which of a plugin's tools wait for the client's approval before they run.

    OpenAI's hosted-MCP ``require_approval``: ``"always"`` / ``"never"``, or tool
    names listed under ``always`` / ``never`` (the rest follow ``default``).
    """

    default: bool = False
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    def required(self, tool_name: str) -> bool:
        if tool_name in self.always:
            return True
        if tool_name in self.never:
            return False
        return self.default


NO_APPROVAL = ApprovalPolicy()


@dataclass(frozen=True, slots=True)
class PluginGrant:
    """One plugin whose tools this request may run on the server, as the request narrowed it."""

    ref: PluginRef
    allowed_tools: frozenset[str] | None = None  # by the tool's own name; None: every tool
    approval: ApprovalPolicy = NO_APPROVAL

    @property
    def cache_key(self) -> tuple[Any, ...]:
        return (self.ref.id, self.allowed_tools, self.approval)


@dataclass(frozen=True, slots=True)
class PluginRequest:
    """A front door's request for one plugin (``enabled_plugin_ids``, an MCP tool entry, ...)."""

    plugin_id: str
    param: str  # where the request named it, for the 400 that names the field
    allowed_tools: frozenset[str] | None = None
    approval: ApprovalPolicy = NO_APPROVAL


@dataclass(slots=True)
class RequestContext:
    """One admitted request: who asks, for which model, with which server-side plugins."""

    request_id: str
    organisation: OrganisationConfig
    model: ModelConfig
    key: KeyInfo | None
    source: str  # "api", "responses", "messages", "mcp", "endpoint", "whatsapp", ...
    plugins: tuple[PluginGrant, ...]  # () means the loop offers no server-side tools
    limits: LimitDecision = UNLIMITED
    endpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The guardrails in force (None: none); the input stage may already be done (endpoints).
    guardrails: Guardrails | None = None
    guard_input: bool = True
    # billing: what admission held for this request until accounting settles it (runtime/billing.py).
    reservation: Reservation | None = None

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key is not None else None

    @property
    def can_ask_approval(self) -> bool:
        """Whether the front door can stop a run for a person's approval (OpenAI's mcp_approval_request)."""
        return self.source == "responses"

    @property
    def track_tokens(self) -> bool:
        """Whether the key's daily-token counter must learn what this request used."""
        return self.key is not None and self.key.daily_tokens is not None


# Where an organisation's guardrails_default apply: the OpenAI- and Anthropic-compatible routes.
GUARDED_SOURCES = frozenset({"api", "responses", "messages"})


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


async def admit(
    gateway: Gateway,
    *,
    key: KeyInfo | None,
    request_id: str,
    model: str,
    plugins: Sequence[PluginRequest] | None,
    source: str,
    organisation_id: str | None = None,
    server_tools: bool = True,
    check: Callable[[RequestContext], None] | None = None,
    enforce_limits: bool = True,
    scope: str = "chat",
    body: Any = None,
    prompt_parts: Sequence[Any] = (),
) -> RequestContext:
    """Admit one request (see the module docstring for the order of the checks).

    ``plugins`` None means every plugin of the organisation; ``server_tools``
    False means none at all (a request that brought its own tools).
    ``check`` runs the front door's own validation that needs the resolved
    context, before anything is spent.
    """
    org_id = organisation_id or (key.organisation_id if key is not None else None)
    organisation = gateway.organisation(org_id) if org_id else None
    if organisation is None:
        raise organisation_not_configured()
    check_scope(key, scope)
    model_config = gateway.resolve_model(organisation, model)
    check_model_access(key, model_config.id)
    grants = grants_for(organisation, plugins) if server_tools else ()
    context = RequestContext(
        request_id=request_id,
        organisation=organisation,
        model=model_config,
        key=key,
        source=source,
        plugins=grants,
        guardrails=gateway.guardrails_for(organisation, organisation.guardrails_default) if source in GUARDED_SOURCES else None,
    )
    telemetry().admitted(context)
    if check is not None:
        check(context)
    # billing: the request holds its most until accounting settles it (runtime/limits/reservation.py).
    planned = plan_reservation(
        gateway.settings, body, orchestrated=bool(grants), prompt_parts=prompt_parts, produces_output=scope != "embeddings"
    )
    # Budget before limits: a refused request must not use up the key's RPM.
    budget_hold = await gateway.budget.check(organisation, reserve_usd=planned.cost_usd(serving_prices(model_config, gateway.router.model)))
    try:
        if enforce_limits and key is not None:
            context.limits = await acquire_limits(gateway, key, reserve_tokens=planned.tokens)
    except BaseException:
        gateway.budget.release(organisation.id, budget_hold)
        raise
    context.reservation = Reservation(organisation.id, budget_hold, context.limits.reservation_id)
    return context


def check_scope(key: KeyInfo | None, scope: str) -> None:
    """403 when the key's scopes do not cover this kind of call."""
    if key is not None and not key.allows_scope(scope):
        raise insufficient_permissions(f"This key may not be used for {scope} (its scopes: {', '.join(sorted(key.scopes or ()))}).")


def check_model_access(key: KeyInfo | None, model_id: str) -> None:
    """403 when the key's model allow-list leaves this model out."""
    if key is not None and not key.allows_model(model_id):
        raise insufficient_permissions(f"This key may not use model '{model_id}'.")


async def acquire_limits(gateway: Gateway, key: KeyInfo, *, reserve_tokens: int = 0) -> LimitDecision:
    # billing: a reservation bigger than the cap blocks as much as the cap (runtime/limits/reservation.py).
    reserve = min(reserve_tokens, key.daily_tokens) if key.daily_tokens is not None else 0
    try:
        decision = await gateway.limiter.acquire(key.id, rpm=key.rpm, daily_tokens=key.daily_tokens, reserve_tokens=reserve)
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


@dataclass(slots=True)
class ToolsContext:
    """An admitted request to run plugin tools directly (``/mcp``, the management API): no model."""

    request_id: str
    organisation: OrganisationConfig
    key: KeyInfo | None
    source: str
    plugins: tuple[PluginGrant, ...]
    limits: LimitDecision = UNLIMITED


async def admit_tools(
    gateway: Gateway,
    *,
    key: KeyInfo | None,
    request_id: str,
    source: str,
    organisation_id: str | None = None,
    plugins: Sequence[PluginRequest] | None = None,
    enforce_limits: bool = True,
    scope: str = "mcp",
) -> ToolsContext:
    """Admit a direct tool call: organisation and scope (403), plugins (400), budget (402), limits (429/503)."""
    org_id = organisation_id or (key.organisation_id if key is not None else None)
    organisation = gateway.organisation(org_id) if org_id else None
    if organisation is None:
        raise organisation_not_configured()
    check_scope(key, scope)
    context = ToolsContext(
        request_id=request_id, organisation=organisation, key=key, source=source, plugins=grants_for(organisation, plugins)
    )
    await gateway.budget.check(organisation)
    if enforce_limits and key is not None:
        context.limits = await acquire_limits(gateway, key)
    return context
