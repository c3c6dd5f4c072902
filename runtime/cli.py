"""The ``plugway`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from runtime.config import ConfigError, Settings, load_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def _fail(message: str, code: int = 2) -> int:
    print(f"plugway: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from runtime.storage.db import create_schema, make_engine

    engine = make_engine(settings.database_url)
    create_schema(engine)
    return engine


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Client libraries log every request at INFO: a write per upstream call on the hot path.
    for noisy in ("httpx", "httpcore", "aiohttp.access", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- serve ------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    from runtime.gateway import check_plugins
    from runtime.plugin_host.manager import load_plugins

    plugins = load_plugins()
    check_plugins(settings, plugins)
    engine = _engine(settings)
    from runtime.storage.keys import mint_key, sync_organisations

    sync_organisations(engine, [o.id for o in settings.organisations])
    host, port = args.host, args.port
    if settings.embedded_default:
        secret, _ = mint_key(engine, organisation_id="default", name="quickstart")
        _print_quickstart(secret, host, port)
    engine.dispose()
    configure_logging()
    run_worker = not args.no_worker
    if args.workers > 1:
        if args.config:
            os.environ["PLUGWAY_CONFIG"] = os.path.abspath(args.config)
        os.environ["PLUGWAY_RUN_WORKER"] = "1" if run_worker else "0"
        uvicorn.run(
            "runtime.api.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            log_level="info",
            access_log=False,
        )
        return 0
    from runtime.api.app import create_app

    app = create_app(settings, plugins=plugins, run_worker=run_worker)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    return 0


def _print_quickstart(secret: str, host: str, port: int) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown_host}:{port}/v1"
    print(
        f"""
plugway is starting on the embedded default: SQLite (./plugway.db), in-process limits,
the offline [demo model] and the first-party plugins for organisation 'default'.

A key was minted for you (shown once): {secret}

Try it:

  curl {base}/chat/completions \\
    -H "Authorization: Bearer {secret}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "demo", "messages": [{{"role": "user", "content": "What is 17 * 23?"}}]}}'

Or with the openai SDK (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{secret}")
  reply = client.chat.completions.create(
      model="demo", messages=[{{"role": "user", "content": "What time is it in Tokyo?"}}])
  print(reply.choices[0].message.content)

Or chat in this terminal:  plugway chat --key {secret}
""",
        flush=True,
    )


# -- keys ---------------------------------------------------------------------------------


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.organisation(args.org) is None:
        known = ", ".join(o.id for o in settings.organisations) or "none"
        return _fail(f"organisation '{args.org}' is not in the configuration (known: {known})")
    from runtime.storage.keys import mint_key

    engine = _engine(settings)
    secret, row = mint_key(engine, organisation_id=args.org, name=args.name, rpm=args.rpm, daily_tokens=args.daily_tokens)
    print(f"created {row.id} for organisation {row.organisation_id} (rpm={row.rpm}, daily_tokens={row.daily_tokens})", file=sys.stderr)
    print(secret)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from runtime.storage.keys import list_keys

    rows = list_keys(_engine(_settings(args)), args.org)
    table = Table("id", "organisation", "name", "prefix", "rpm", "daily tokens", "created", "revoked")
    for row in rows:
        table.add_row(
            row.id, row.organisation_id, row.name or "", row.prefix + "…", str(row.rpm or "-"),
            str(row.daily_tokens or "-"), row.created_at.strftime("%Y-%m-%d %H:%M"),
            row.revoked_at.strftime("%Y-%m-%d %H:%M") if row.revoked_at else "",
        )
    Console().print(table)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from runtime.storage.keys import revoke_key

    if not revoke_key(_engine(_settings(args)), args.key_id):
        return _fail(f"no active key '{args.key_id}'", 1)
    print(f"revoked {args.key_id}; running gateways stop accepting it within 5 seconds")
    return 0


def cmd_keys_update(args: argparse.Namespace) -> int:
    from runtime.storage.keys import update_key_limits

    if not update_key_limits(_engine(_settings(args)), args.key_id, rpm=args.rpm, daily_tokens=args.daily_tokens):
        return _fail(f"no key '{args.key_id}'", 1)
    print(f"updated {args.key_id}: rpm={args.rpm}, daily_tokens={args.daily_tokens}")
    return 0


# -- plugins and MCP --------------------------------------------------------------------


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from runtime.plugin_host.manager import load_plugins

    settings = _settings(args)
    host = load_plugins()
    console = Console()
    table = Table("plugin", "source", "tools", "organisations", "health")
    for plugin in host.plugins.values():
        orgs = [o.id for o in settings.organisations if o.plugin(plugin.id) and not o.plugin(plugin.id).mcp]  # type: ignore[union-attr]
        tools = "\n".join(f"{t.name}: {t.description.splitlines()[0][:70]}" for t in plugin.tools.values())
        table.add_row(plugin.id, plugin.origin, tools, ", ".join(orgs) or "-", "ok")
    for plugin_id, failure in host.failures.items():
        table.add_row(plugin_id, "entrypoint", "", "-", f"[red]failed: {failure}[/red]")
    if any(ref.mcp for org in settings.organisations for ref in org.plugins):
        from runtime.mcp.cli import describe_mcp_plugins

        for row in asyncio.run(describe_mcp_plugins(settings)):
            tools = "\n".join(f"{t['name']}: {(t.get('description') or '').splitlines()[0][:70] if t.get('description') else ''}" for t in row.get("tools", []))
            health = "ok" if row.get("healthy") else f"[red]unhealthy: {row.get('error')}[/red]"
            table.add_row(row["plugin_id"], f"mcp ({row.get('transport')})", tools, ", ".join(row.get("organisations", [])), health)
    console.print(table)
    return 0


def cmd_mcp_call(args: argparse.Namespace) -> int:
    from runtime.mcp.cli import call_tool

    try:
        arguments = json.loads(args.arguments) if args.arguments else {}
    except json.JSONDecodeError as exc:
        return _fail(f"arguments are not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        return _fail("arguments must be a JSON object")
    ok, text = asyncio.run(call_tool(_settings(args), args.plugin, args.tool, arguments))
    print(text)
    return 0 if ok else 1


# -- chat ---------------------------------------------------------------------------------


def cmd_chat(args: argparse.Namespace) -> int:
    from runtime.chat_client import run_chat

    key = args.key or os.environ.get("PLUGWAY_API_KEY")
    if not key:
        return _fail("give a key with --key or PLUGWAY_API_KEY")
    return run_chat(base_url=args.base_url, key=key, model=args.model)


# -- database, worker, WhatsApp ---------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        from runtime.storage.migrations import upgrade
    except ImportError:
        _engine(settings)
        print("schema created")
        return 0
    upgrade(settings.database_url)
    print("database is at the latest revision")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.whatsapp.cli import run_worker

    configure_logging()
    asyncio.run(run_worker(_settings(args)))
    return 0


def cmd_whatsapp_simulate(args: argparse.Namespace) -> int:
    from workers.whatsapp.cli import simulate

    return simulate(args.base_url.rstrip("/"), _settings(args), args.app, args.text, args.sender)


def cmd_whatsapp_failed(args: argparse.Namespace) -> int:
    from workers.whatsapp.cli import dead_letters

    return dead_letters(_settings(args), limit=args.limit)


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plugway", description="OpenAI-compatible gateway with server-side tool orchestration")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="YAML configuration file (default: $PLUGWAY_CONFIG or the embedded default)")
        return p

    serve = with_config(sub.add_parser("serve", help="run the gateway (and the WhatsApp worker)"))
    serve.add_argument("--host", default=os.environ.get("PLUGWAY_HOST", DEFAULT_HOST))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PLUGWAY_PORT", DEFAULT_PORT)))
    serve.add_argument("--workers", type=int, default=1, help="gateway processes")
    serve.add_argument("--no-worker", action="store_true", help="do not run the WhatsApp worker in-process")
    serve.set_defaults(func=cmd_serve)

    worker = with_config(sub.add_parser("worker", help="run WhatsApp reply workers as their own process"))
    worker.set_defaults(func=cmd_worker)

    keys = sub.add_parser("keys", help="manage gateway keys").add_subparsers(dest="keys_command", required=True)
    create = with_config(keys.add_parser("create", help="mint a key; the key alone is the last line on stdout"))
    create.add_argument("--org", required=True)
    create.add_argument("--name")
    create.add_argument("--rpm", type=int)
    create.add_argument("--daily-tokens", type=int)
    create.set_defaults(func=cmd_keys_create)
    listing = with_config(keys.add_parser("list", help="list keys"))
    listing.add_argument("--org")
    listing.set_defaults(func=cmd_keys_list)
    revoke = with_config(keys.add_parser("revoke", help="revoke a key by id"))
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)
    update = with_config(keys.add_parser("update", help="change a key's limits"))
    update.add_argument("key_id")
    update.add_argument("--rpm", type=int)
    update.add_argument("--daily-tokens", type=int)
    update.set_defaults(func=cmd_keys_update)

    plugins = sub.add_parser("plugins", help="installed plugins").add_subparsers(dest="plugins_command", required=True)
    with_config(plugins.add_parser("list", help="every plugin, its source and tools (MCP included)")).set_defaults(func=cmd_plugins_list)

    mcp = sub.add_parser("mcp", help="MCP debugging").add_subparsers(dest="mcp_command", required=True)
    call = with_config(mcp.add_parser("call", help="call one MCP tool by hand"))
    call.add_argument("plugin")
    call.add_argument("tool")
    call.add_argument("arguments", nargs="?", default="{}")
    call.set_defaults(func=cmd_mcp_call)

    chat = sub.add_parser("chat", help="interactive terminal chat")
    chat.add_argument("--model", default="demo")
    chat.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/v1")
    chat.add_argument("--key")
    chat.set_defaults(func=cmd_chat)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    with_config(db.add_parser("upgrade", help="apply migrations")).set_defaults(func=cmd_db_upgrade)

    whatsapp = sub.add_parser("whatsapp", help="WhatsApp tools").add_subparsers(dest="wa_command", required=True)
    simulate = with_config(whatsapp.add_parser("simulate", help="send a signed inbound webhook to a running gateway"))
    simulate.add_argument("--app", required=True)
    simulate.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}")
    simulate.add_argument("--from", dest="sender", default="15550001111")
    simulate.add_argument("text")
    simulate.set_defaults(func=cmd_whatsapp_simulate)
    failed = with_config(whatsapp.add_parser("failed", help="inbound messages that will not be answered (dead letters), and why"))
    failed.add_argument("--limit", type=int, default=50)
    failed.set_defaults(func=cmd_whatsapp_failed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: Any = args.func(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
