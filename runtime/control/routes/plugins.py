"""Plugins: each organisation's tools with their JSON schemas, MCP health, and a call of one tool."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request

from runtime.admission import admit_tools
from runtime.api.deps import GatewayDep
from runtime.control.audit import audit
from runtime.control.auth import AdminDep
from runtime.control.routes.organisations import plugin_summary
from runtime.control.routes.upstream_oauth import authorization_summary
from runtime.control.schemas import ToolCall
from runtime.errors import GatewayError
from runtime.gateway import Gateway
from runtime.orchestration.tools import outcome_status, run_tool_call
from runtime.request import DoorRules, PluginGrant, PluginRequest

router = APIRouter(tags=["admin: plugins"])
# An operator trying a tool: no key (so no key limits), and no budget to refuse a call that costs nothing.
CONSOLE_TOOL_DOOR = DoorRules("admin", budget=False)


def _not_found(message: str) -> GatewayError:
    return GatewayError(404, message, code="not_found", type="invalid_request_error")


async def describe(gateway: Gateway, organisation_id: str | None) -> list[dict[str, Any]]:
    out = []
    for organisation in gateway.settings.organisations:
        if organisation_id not in (None, organisation.id):
            continue
        toolset = await gateway.catalog.toolset(organisation, tuple(PluginGrant(ref) for ref in organisation.plugins))
        for ref in organisation.plugins:
            entry = plugin_summary(gateway, organisation.id, ref)
            entry["organisation"] = organisation.id
            upstream_auth = getattr(gateway.mcp, "upstream_auth", None)
            if ref.mcp is not None and ref.mcp.auth is not None and upstream_auth is not None:
                # Who has authorized it, for the console's Authorize button: never a token.
                entry["authorization"] = authorization_summary(ref, await upstream_auth.authorizations(organisation.id, ref))
            entry["tools"] = [
                {
                    "name": bound.public_name,
                    "tool": bound.spec.name,
                    "description": bound.spec.description,
                    "parameters": bound.spec.parameters,
                    "annotations": bound.spec.annotations,
                }
                for bound in toolset.by_name.values()
                if bound.ref.id == ref.id
            ]
            out.append(entry)
    return out


@router.get("/admin/v1/plugins")
async def list_plugins(gateway: GatewayDep, admin: AdminDep, organisation: str | None = None) -> dict[str, Any]:
    return {"data": await describe(gateway, organisation), "next_cursor": None}


@router.post("/admin/v1/plugins/{organisation_id}/{plugin_id}/tools/{tool}/call")
async def call_tool(organisation_id: str, plugin_id: str, tool: str, body: ToolCall, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    """Run one tool with the given arguments, as the orchestration loop would (validation, timeout, cap)."""
    organisation = gateway.organisation(organisation_id)
    if organisation is None:
        raise _not_found(f"Organisation '{organisation_id}' is not configured.")
    ref = organisation.plugin(plugin_id)
    if ref is None:
        raise _not_found(f"Plugin '{plugin_id}' is not configured for organisation '{organisation_id}'.")
    toolset = await gateway.catalog.toolset(organisation, (PluginGrant(ref),))
    bound = next((b for b in toolset.by_name.values() if tool in (b.spec.name, b.public_name)), None)
    if bound is None:
        raise _not_found(f"Plugin '{plugin_id}' has no tool '{tool}'.")
    request_id = f"admin-{uuid.uuid4().hex[:16]}"
    admitted = await admit_tools(
        gateway, CONSOLE_TOOL_DOOR, key=None, request_id=request_id, organisation_id=organisation_id, plugins=[PluginRequest(plugin_id, "plugin_id")]
    )
    arguments = orjson.dumps(body.arguments).decode()
    call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": {"name": bound.public_name, "arguments": arguments}}
    started = time.perf_counter()
    status = "cancelled"
    try:
        outcome = await run_tool_call(
            call, toolset, organisation_id=organisation_id, request_id=request_id, round_no=0, config=gateway.settings.orchestration
        )
        status = outcome_status(outcome)
    finally:
        gateway.record_tool_call(admitted, bound.public_name, started=started, status=status)
    await audit(request, admin, "plugin.call", f"{organisation_id}/{bound.public_name}", {"ok": outcome.ok})
    return {"tool": bound.public_name, "ok": outcome.ok, "content": outcome.content, "error": outcome.error, "duration_ms": round(outcome.duration_ms, 2)}

