"""``plugway endpoints list`` and ``plugway endpoints call ORG SLUG "message" [--session ID]``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

from runtime.cli_output import Column, add_json_option, print_json, print_rows
from runtime.config import EndpointConfig, OrganisationConfig, Settings, load_settings


def add_commands(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    endpoints = sub.add_parser("endpoints", help="named assistants of each organisation").add_subparsers(dest="endpoints_command", required=True)
    listing = with_config(endpoints.add_parser("list", help="every endpoint: slug, model, plugins, guardrails, sessions"))
    listing.add_argument("--org", help="only this organisation's")
    add_json_option(listing, "the endpoints")
    listing.set_defaults(func=cmd_list)
    call = with_config(endpoints.add_parser("call", help="call an endpoint in this process and print the answer"))
    call.add_argument("org")
    call.add_argument("slug")
    call.add_argument("message")
    call.add_argument("--session", help="resume this session id")
    call.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a system prompt variable (repeatable)")
    call.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    call.set_defaults(func=cmd_call)


def _rows(settings: Settings, org: str | None) -> list[dict[str, Any]]:
    """YAML endpoints, then those stored through the management API (when the database exists)."""
    from runtime.endpoints.store import stored_endpoints
    from runtime.storage.db import DatabaseUnavailable, open_database

    listed: list[tuple[OrganisationConfig, EndpointConfig, str]] = [
        (organisation, endpoint, "config") for organisation in settings.organisations for endpoint in organisation.endpoints
    ]
    try:
        engine = open_database(settings.database_url, create=False)
    except DatabaseUnavailable as exc:
        # The YAML ones are still worth listing.
        print(f"plugway: endpoints stored through the management API are not listed: {exc}", file=sys.stderr)
        engine = None
    if engine is not None:
        try:
            stored = stored_endpoints(engine)
        finally:
            engine.dispose()
        for (organisation_id, _slug), endpoint in sorted(stored.items()):
            organisation = settings.organisation(organisation_id)
            if organisation is not None:  # an organisation since removed from the configuration serves nothing
                listed.append((organisation, endpoint, "api"))
    return [
        {
            "organisation": organisation.id,
            "slug": endpoint.slug,
            "model": endpoint.model,
            "plugins": organisation.plugin_ids if endpoint.plugins is None else endpoint.plugins,
            "guardrails": endpoint.guardrails,
            "sessions": endpoint.sessions.enabled,
            "stream": endpoint.stream,
            "active": endpoint.active,
            "source": source,
        }
        for organisation, endpoint, source in listed
        if not org or organisation.id == org
    ]


ENDPOINT_COLUMNS = (
    Column("organisation", "organisation", identifier=True),
    Column("endpoint", "slug", identifier=True),
    Column("model", "model", identifier=True),
    Column("plugins", lambda row: row["plugins"] or "none"),
    Column("guardrails", "guardrails", optional=True),
    Column("sessions", "sessions", optional=True),
    Column("active", "active"),
    Column("source", lambda row: "YAML" if row["source"] == "config" else "management API", optional=True),
)


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    rows = _rows(settings, args.org)
    if args.json:
        print_json(rows)
    else:
        print_rows(rows, ENDPOINT_COLUMNS, empty="no endpoints configured")
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"plugway: --var takes NAME=VALUE, not {item!r}", file=sys.stderr)
            return 2
        variables[name] = value
    settings = load_settings(args.config)
    return asyncio.run(_call(settings, args, variables))


async def _call(settings: Settings, args: argparse.Namespace, variables: dict[str, str]) -> int:
    from runtime.endpoints.pipeline import EndpointError, EndpointService
    from runtime.gateway import Gateway

    gateway = await Gateway.create(settings)
    try:
        service = EndpointService(gateway)
        body: dict[str, Any] = {"message": args.message, "variables": variables}
        if args.session:
            body["session_id"] = args.session
        try:
            prepared = await service.prepare(
                key=None, organisation_id=args.org, slug=args.slug, body=body, request_id=f"cli-{uuid.uuid4().hex[:12]}", source="cli"
            )
            answer = await service.complete(prepared)
        except EndpointError as exc:
            print(f"plugway: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    finally:
        await gateway.aclose()
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(answer["content"])
        if answer["meta"].get("session_id"):
            print(f"session: {answer['meta']['session_id']}", file=sys.stderr)
    return 0
