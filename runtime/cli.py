"""The ``plugway`` command.

Every failure the user can cause or meet (a bad argument, a bad configuration,
an unreachable database, a busy port) ends with one line on stderr starting
``plugway:`` and a non-zero exit: 2 for a wrong command or configuration, 1
when the command could not do its work. Never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from runtime.cli_output import Column, add_json_option, note, print_json, print_rows
from runtime.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from runtime.quickstart import QuickstartKeys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Keep in step with runtime.storage.models (not imported here: `plugway chat` needs no database).
INT64_MAX = 2**63 - 1
KEY_NAME_MAX_CHARS = 200
MAX_LISTED = 100_000


class CommandFailed(Exception):
    """The command cannot do its work; ``str()`` is the line shown after ``plugway:``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int = 2) -> int:
    print(f"plugway: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _database_location(settings: Settings) -> str:
    """Where the data lives, for messages: the SQLite file's absolute path, or the URL without its password."""
    from runtime.storage.db import sqlite_file
    from runtime.storage.urls import mask_url

    file = sqlite_file(settings.database_url)
    return str(file) if file is not None else mask_url(settings.database_url)


def _no_database_yet(settings: Settings) -> str:
    where = f"there is no database at {_database_location(settings)} yet"
    if settings.embedded_default:
        where += " (the embedded default keeps plugway.db in the directory where `plugway serve` runs: run this there, or pass --config)"
    return where


def _open_database(settings: Settings, *, create: bool = True) -> Engine | None:
    """The configured database, migrated; None when ``create`` is False and its SQLite file does not exist."""
    from runtime.storage.db import open_database

    return open_database(settings.database_url, create=create)


def _existing_database(settings: Settings, missing: str) -> Engine:
    engine = _open_database(settings, create=False)
    if engine is None:
        raise CommandFailed(f"{missing} ({_no_database_yet(settings)})")
    return engine


def configure_logging(settings: Settings | None = None, *, processes: int = 1) -> None:
    """The process's logging (``logging.format``: text or JSON lines), and what several processes share.

    With ``processes`` > 1 (``serve --workers N``) the Prometheus metric files'
    directory is prepared here, before the workers start, since they must
    inherit it (see ``runtime.telemetry.metrics``).
    """
    from runtime.telemetry.logs import configure

    configure(settings.logging if settings is not None else None)
    if processes > 1 and settings is not None and settings.metrics.enabled:
        from runtime.telemetry.metrics import prepare_multiprocess_directory

        prepare_multiprocess_directory()


# -- argument types: each refusal becomes one line through _Parser.error ------------------


class Unlimited:
    """``--rpm none``: no limit (as opposed to 0, which refuses every request)."""

    def __repr__(self) -> str:
        return "unlimited"


UNLIMITED = Unlimited()
UNLIMITED_WORDS = ("none", "unlimited")


def limit_value(text: str) -> int | Unlimited:
    if text.strip().lower() in UNLIMITED_WORDS:
        return UNLIMITED
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a number; give 0 (refuse every request), a positive number, or 'none' (no limit)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{value} is negative; give 0 (refuse every request), a positive number, or 'none' (no limit)"
        )
    if value > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text} is too large: at most {INT64_MAX}")
    return value


def scope_list(text: str) -> list[str] | Unlimited:
    from runtime.storage.keys import SCOPES

    if text.strip().lower() in ("all", *UNLIMITED_WORDS):
        return UNLIMITED
    scopes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise argparse.ArgumentTypeError(f"scopes are a comma-separated choice of {', '.join(SCOPES)} (or 'all'), not '{text}'")
    return scopes


def model_list(text: str) -> list[str] | Unlimited:
    if text.strip().lower() in ("all", *UNLIMITED_WORDS):
        return UNLIMITED
    models = [part.strip() for part in text.split(",") if part.strip()]
    if not models:
        raise argparse.ArgumentTypeError("give comma-separated model ids, or 'all'")
    return models


def key_name(text: str) -> str:
    if len(text) > KEY_NAME_MAX_CHARS:
        raise argparse.ArgumentTypeError(f"the name is {len(text)} characters long; at most {KEY_NAME_MAX_CHARS}")
    return text


def whole_number(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"'{text}' is not {what} (from {low} to {high})")
        return value

    return parse


def _shown(limit: int | None) -> str:
    return "unlimited" if limit is None else str(limit)


def _seconds(ttl_s: float) -> str:
    return "at once" if ttl_s <= 0 else f"within {ttl_s:g} seconds"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``plugway:`` line pointing at ``--help``, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("plugway").strip()
        print(f"plugway: {command + ': ' if command else ''}{message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


# -- serve ------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.rotate_keys and not settings.embedded_default:
        return _fail("--rotate-keys replaces the embedded default's quick-start keys; with a configuration, revoke and mint keys with `plugway keys`")
    # The port first: a busy port must not leave a minted key or started MCP servers behind.
    listener = _listen(args.host, args.port)
    try:
        port = int(listener.getsockname()[1])
        _warn_if_redis_unreachable(settings)
        from runtime.gateway import check_plugins
        from runtime.plugin_host.manager import load_plugins
        from runtime.storage.keys import sync_organisations

        plugins = load_plugins()
        check_plugins(settings, plugins)
        engine = _open_database(settings)
        assert engine is not None
        try:
            sync_organisations(engine, [o.id for o in settings.organisations])
            if settings.embedded_default:
                from runtime.quickstart import keys_file, quickstart_keys
                from runtime.storage.db import sqlite_file

                keys = quickstart_keys(
                    engine, keys_file(sqlite_file(settings.database_url)), organisation_id="default", rotate=args.rotate_keys
                )
                _print_quickstart(settings, keys, args.host, port, _database_location(settings))
            else:
                _print_console(args.host, port, args.config)
        finally:
            engine.dispose()
        configure_logging(settings, processes=args.workers)
        run_worker = not args.no_worker
        if args.workers > 1:
            return _serve_workers(args, listener, port, run_worker, settings.body_read_timeout_s)
        return _serve_one(settings, plugins, listener, args.host, port, run_worker)
    finally:
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """Bind the gateway's port now, as uvicorn would, and hand the socket over later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = (exc.strerror or str(exc)).lower()
        raise CommandFailed(f"cannot listen on {_host_for_url(host)}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def _serve_one(settings: Settings, plugins: Any, listener: socket.socket, host: str, port: int, run_worker: bool) -> int:
    import uvicorn

    from runtime.api.app import create_app
    from runtime.api.guard import server_options

    class AnnouncingServer(uvicorn.Server):
        # Given a socket, uvicorn does not say where it listens: say it as it would.
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                logging.getLogger("uvicorn.error").info(
                    "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", _host_for_url(host), port
                )

    app = create_app(settings, plugins=plugins, run_worker=run_worker)
    # Long-lived streams (MCP sessions, SSE) must not hold a shutdown forever.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=10, **server_options(settings.body_read_timeout_s)  # type: ignore[arg-type]
    )
    AnnouncingServer(config).run(sockets=[listener])
    return 0


def _serve_workers(args: argparse.Namespace, listener: socket.socket, port: int, run_worker: bool, read_timeout_s: float) -> int:
    import uvicorn

    from runtime.api.guard import server_options

    if args.config:
        os.environ["PLUGWAY_CONFIG"] = os.path.abspath(args.config)
    os.environ["PLUGWAY_RUN_WORKER"] = "1" if run_worker else "0"
    # uvicorn's supervisor binds the port itself: free it just before (a race only with another process).
    listener.close()
    uvicorn.run(
        "runtime.api.app:app_from_environment",
        factory=True,
        host=args.host,
        port=port,
        workers=args.workers,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
        **server_options(read_timeout_s, spawned=True),  # type: ignore[arg-type]
    )
    return 0


def _warn_if_redis_unreachable(settings: Settings) -> None:
    """Say so at start-up; the gateway still starts and refuses requests with 503 until Redis answers."""
    if not settings.redis_url:
        return
    import redis

    from runtime.storage.urls import mask_url

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        print(
            f"plugway: warning: redis_url {mask_url(settings.redis_url)} does not answer ({exc}); "
            "starting anyway: requests are refused with 503 rate_limiter_unavailable until it does",
            file=sys.stderr,
            flush=True,
        )
    finally:
        client.close()


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def plugway_command() -> str:
    """How to run this very plugway from any directory, in a fresh shell (no activated venv needed)."""
    script = Path(sys.argv[0])
    if script.name == "plugway" and script.is_file():
        return shlex.quote(str(script.absolute()))
    return shlex.join([sys.executable, "-m", "runtime.cli"])


QUICKSTART_QUESTION = "What is 17 * 23?"


def _print_quickstart(settings: Settings, keys: QuickstartKeys, host: str, port: int, database: str) -> None:
    base = f"http://{_host_for_url(host)}:{port}/v1"
    console = f"http://{_host_for_url(host)}:{port}/console"
    organisation = settings.organisation("default")
    plugins = ", ".join(f"{ref.id} (MCP)" if ref.mcp else ref.id for ref in organisation.plugins) if organisation else "none"
    plugway = plugway_command()
    if keys.minted:
        kept = f"Keys were minted for you and saved in {keys.path} (readable only by you)"
    else:
        kept = f"The keys of your first start are reused, from {keys.path} (readable only by you)"
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": QUICKSTART_QUESTION}]})
    print(
        f"""
plugway is starting on the embedded default: SQLite ({database}), in-process limits,
the offline [demo model], and these plugins for organisation 'default': {plugins}.

{kept};
new ones: {plugway} serve --rotate-keys (or delete that file).

  gateway key: {keys.gateway_key}
  admin key:   {keys.admin_key}

Try it:

  curl {base}/chat/completions \\
    -H "Authorization: Bearer {keys.gateway_key}" \\
    -H "Content-Type: application/json" \\
    -d '{body}'

Or with the openai SDK (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{keys.gateway_key}")
  reply = client.chat.completions.create(
      model="demo", messages=[{{"role": "user", "content": "{QUICKSTART_QUESTION}"}}])
  print(reply.choices[0].message.content)

Or chat in a terminal:  {plugway} chat --base-url {base} --key {keys.gateway_key}

The console: {console}
Sign in with the admin key above.
""",
        flush=True,
    )


def _print_console(host: str, port: int, config: str | None) -> None:
    mint = "plugway admin keys create" + (f" --config {shlex.quote(config)}" if config else "")
    print(f"The console: http://{_host_for_url(host)}:{port}/console (sign in with an admin key; mint one with: {mint})", flush=True)


# -- keys ---------------------------------------------------------------------------------


def _check_models(settings: Settings, org_id: str, models: list[str]) -> None:
    """Refuse a model allow-list naming a model the organisation cannot use (a typo would lock the key out)."""
    organisation = settings.organisation(org_id)
    usable = [m.id for m in settings.models if organisation is None or organisation.models is None or m.id in organisation.models]
    for model in models:
        if model not in usable:
            raise CommandFailed(
                f"model '{model}' is not configured for organisation '{org_id}' (its models: {', '.join(usable) or 'none'})"
            )


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.organisation(args.org) is None:
        known = ", ".join(o.id for o in settings.organisations) or "none"
        return _fail(f"organisation '{args.org}' is not in the configuration (known: {known})")
    if not isinstance(args.models, Unlimited) and args.models is not None:
        _check_models(settings, args.org, args.models)
    from runtime.control.audit import record_cli
    from runtime.storage.keys import mint_key

    rpm = None if isinstance(args.rpm, Unlimited) else args.rpm
    daily_tokens = None if isinstance(args.daily_tokens, Unlimited) else args.daily_tokens
    engine = _open_database(settings)
    assert engine is not None
    try:
        secret, row = mint_key(
            engine, organisation_id=args.org, name=args.name, rpm=rpm, daily_tokens=daily_tokens,
            scopes=None if isinstance(args.scopes, Unlimited) else args.scopes,
            models=None if isinstance(args.models, Unlimited) else args.models,
        )
        record_cli(engine, "key.create", row.id, {"organisation": row.organisation_id, "name": row.name, "rpm": row.rpm, "daily_tokens": row.daily_tokens})
    finally:
        engine.dispose()
    print(
        f"created {row.id} for organisation {row.organisation_id} in {_database_location(settings)} "
        f"(rpm={_shown(row.rpm)}, daily_tokens={_shown(row.daily_tokens)})",
        file=sys.stderr,
    )
    print(secret)
    return 0


KEY_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("organisation", "organisation", identifier=True),
    Column("prefix", "prefix"),
    Column("rpm", lambda row: _shown(row["rpm"])),
    Column("daily tokens", lambda row: _shown(row["daily_tokens"])),
    Column("revoked", "revoked_at"),
    Column("name", "name", optional=True),
    Column("scopes", lambda row: row["scopes"] if row["scopes"] is not None else "all", optional=True),
    Column("models", lambda row: row["models"] if row["models"] is not None else "all", optional=True),
    Column("created", "created_at", optional=True),
)


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine = _open_database(settings, create=False)
    if engine is None:
        if args.json:
            print_json({"keys": []})
        else:
            note(f"no keys: {_no_database_yet(settings)}")
        return 0
    from runtime.storage.keys import list_keys, stored_list

    try:
        keys = list_keys(engine, args.org)
    finally:
        engine.dispose()
    rows = [
        {
            "id": row.id, "organisation": row.organisation_id, "name": row.name, "prefix": row.prefix,
            "rpm": row.rpm, "daily_tokens": row.daily_tokens, "scopes": stored_list(row.scopes),
            "models": stored_list(row.models), "created_at": row.created_at, "revoked_at": row.revoked_at,
        }
        for row in keys
    ]
    if args.json:
        print_json({"keys": rows})
        return 0
    where = _database_location(settings)
    print_rows(
        rows, KEY_COLUMNS, empty=f"no keys{f' for organisation {args.org}' if args.org else ''} in {where}",
        caption=f"{where}; rpm 0 refuses every request",
    )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from runtime.control.audit import record_cli
    from runtime.storage.keys import find_key, revoke_key

    settings = _settings(args)
    engine = _existing_database(settings, f"no key '{args.key_id}'")
    try:
        row = find_key(engine, args.key_id)
        if row is None:
            raise CommandFailed(f"no key '{args.key_id}' in {_database_location(settings)}")
        if not revoke_key(engine, args.key_id):
            raise CommandFailed(f"key '{args.key_id}' is already revoked")
        record_cli(engine, "key.revoke", args.key_id)
    finally:
        engine.dispose()
    print(f"revoked {args.key_id}; running gateways stop accepting it {_seconds(settings.key_cache_ttl_s)}")
    return 0


def cmd_keys_update(args: argparse.Namespace) -> int:
    from runtime.control.audit import record_cli
    from runtime.storage.keys import KEEP, update_key

    def change(value: int | Unlimited | None) -> int | None | Any:
        return KEEP if value is None else (None if isinstance(value, Unlimited) else value)

    def listed(value: list[str] | Unlimited | None) -> list[str] | None | Any:
        return KEEP if value is None else (None if isinstance(value, Unlimited) else value)

    changed = {name: getattr(args, name) for name in ("rpm", "daily_tokens", "name", "scopes", "models") if getattr(args, name) is not None}
    if not changed:
        return _fail("keys update: nothing to change: give --rpm, --daily-tokens, --name, --scopes or --models")
    settings = _settings(args)
    engine = _existing_database(settings, f"no key '{args.key_id}'")
    try:
        if isinstance(args.models, list):
            from runtime.storage.keys import find_key

            found = find_key(engine, args.key_id)
            if found is not None:
                _check_models(settings, found.organisation_id, args.models)
        row = update_key(
            engine, args.key_id, rpm=change(args.rpm), daily_tokens=change(args.daily_tokens),
            name=KEEP if args.name is None else args.name, scopes=listed(args.scopes), models=listed(args.models),
        )
        record_cli(engine, "key.update", row.id, {name: None if isinstance(value, Unlimited) else value for name, value in changed.items()})
    finally:
        engine.dispose()
    print(
        f"updated {row.id}: rpm={_shown(row.rpm)}, daily_tokens={_shown(row.daily_tokens)}, name={row.name or '-'}; "
        f"running gateways apply it {_seconds(settings.key_cache_ttl_s)}"
    )
    return 0


# -- plugins and MCP --------------------------------------------------------------------


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from runtime.mcp.cli import PLUGIN_COLUMNS, list_plugins, plugin_tool_rows
    from runtime.plugin_host.manager import load_plugins

    rows = list_plugins(_settings(args), load_plugins())
    if args.json:
        print_json({"plugins": rows})
    else:
        print_rows(plugin_tool_rows(rows), PLUGIN_COLUMNS, empty="no plugins installed")
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


# -- database, usage, worker, WhatsApp ----------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    engine = _open_database(_settings(args))
    assert engine is not None
    engine.dispose()
    print("database is at the latest revision")
    return 0


def cmd_usage_replay(args: argparse.Namespace) -> int:
    from runtime.storage.usage import UsageNotWritten, default_spill_path, replay_spilled

    settings = _settings(args)
    engine = _existing_database(settings, "cannot replay usage")
    try:
        path = Path(args.file) if args.file else default_spill_path(engine)
        if not path.exists():
            print(f"nothing to replay: {path} does not exist")
            return 0
        try:
            written, refused = replay_spilled(engine, path)
        except UsageNotWritten as exc:
            raise CommandFailed(f"{exc}; the records are back in {path}") from None
        except ValueError as exc:
            raise CommandFailed(str(exc)) from None
    finally:
        engine.dispose()
    if refused:
        print(f"{written} usage records written, {refused} still refused (kept in {path}: see the reasons there)")
        return 1
    print(f"{written} usage records written from {path}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.whatsapp.cli import run_worker

    settings = _settings(args)
    engine = _open_database(settings)  # a clear line now, rather than a traceback from the worker
    assert engine is not None
    engine.dispose()
    configure_logging(settings)
    asyncio.run(run_worker(settings))
    return 0


def cmd_whatsapp_simulate(args: argparse.Namespace) -> int:
    from workers.whatsapp.cli import simulate

    return simulate(args.base_url.rstrip("/"), _settings(args), args.app, args.text, args.sender)


def cmd_whatsapp_failed(args: argparse.Namespace) -> int:
    from workers.whatsapp.cli import dead_letters

    settings = _settings(args)
    engine = _open_database(settings, create=False)
    if engine is None:
        if args.json:
            print_json({"failed": []})
        else:
            note(f"no failed WhatsApp messages: {_no_database_yet(settings)}")
        return 0
    engine.dispose()
    return dead_letters(settings, limit=args.limit, as_json=args.json)


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="plugway", description="OpenAI-compatible gateway with server-side tool orchestration")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="YAML configuration file (default: $PLUGWAY_CONFIG or the embedded default)")
        return p

    limit_help = "a whole number, 0 to refuse every request, or 'none' for no limit"
    serve = with_config(sub.add_parser("serve", help="run the gateway (and the WhatsApp worker)"))
    serve.add_argument("--host", default=os.environ.get("PLUGWAY_HOST", DEFAULT_HOST))
    serve.add_argument("--port", type=whole_number(0, 65535, "a port number"), default=os.environ.get("PLUGWAY_PORT", str(DEFAULT_PORT)))
    serve.add_argument("--workers", type=whole_number(1, 64, "a number of processes"), default=1, help="gateway processes")
    serve.add_argument("--no-worker", action="store_true", help="do not run the WhatsApp worker in-process")
    serve.add_argument(
        "--rotate-keys", action="store_true",
        help="embedded default only: revoke the saved quick-start keys and mint new ones (see plugway-keys.env)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = with_config(sub.add_parser("worker", help="run WhatsApp reply workers as their own process"))
    worker.set_defaults(func=cmd_worker)

    keys = sub.add_parser("keys", help="manage gateway keys").add_subparsers(dest="keys_command", required=True)
    create = with_config(keys.add_parser("create", help="mint a key; the key alone is the last line on stdout"))
    create.add_argument("--org", required=True)
    create.add_argument("--name", type=key_name)
    create.add_argument("--rpm", type=limit_value, help=f"requests per minute: {limit_help} (default: none)")
    create.add_argument("--daily-tokens", type=limit_value, help=f"tokens per UTC day: {limit_help} (default: none)")
    create.add_argument("--scopes", type=scope_list, help="comma-separated: chat, embeddings, mcp (default: all)")
    create.add_argument("--models", type=model_list, help="comma-separated model allow-list (default: every model of the organisation)")
    create.set_defaults(func=cmd_keys_create)
    listing = with_config(keys.add_parser("list", help="list keys (never creates a database)"))
    listing.add_argument("--org")
    add_json_option(listing, "the keys (never the keys themselves: their ids, prefixes and limits)")
    listing.set_defaults(func=cmd_keys_list)
    revoke = with_config(keys.add_parser("revoke", help="revoke a key by id"))
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)
    update = with_config(keys.add_parser("update", help="change a key's limits or name; what is not given is kept"))
    update.add_argument("key_id")
    update.add_argument("--rpm", type=limit_value, help=f"requests per minute: {limit_help}")
    update.add_argument("--daily-tokens", type=limit_value, help=f"tokens per UTC day: {limit_help}")
    update.add_argument("--name", type=key_name)
    update.add_argument("--scopes", type=scope_list, help="comma-separated: chat, embeddings, mcp; 'all' for every scope")
    update.add_argument("--models", type=model_list, help="comma-separated model allow-list; 'all' for every model")
    update.set_defaults(func=cmd_keys_update)

    from runtime.control.cli import add_commands as add_admin_commands

    add_admin_commands(sub, with_config)

    plugins = sub.add_parser("plugins", help="installed plugins").add_subparsers(dest="plugins_command", required=True)
    listing_plugins = with_config(plugins.add_parser("list", help="every plugin, its source and tools (MCP included)"))
    add_json_option(listing_plugins, "every plugin (tool names as the model sees them, annotations, resources, prompts)")
    listing_plugins.set_defaults(func=cmd_plugins_list)

    mcp = sub.add_parser("mcp", help="MCP debugging").add_subparsers(dest="mcp_command", required=True)
    call = with_config(mcp.add_parser("call", help="call one MCP tool by hand"))
    call.add_argument("plugin")
    call.add_argument("tool")
    call.add_argument("arguments", nargs="?", default="{}")
    call.set_defaults(func=cmd_mcp_call)

    chat = sub.add_parser("chat", help="interactive terminal chat")
    chat.add_argument("--model", default="demo")
    chat.add_argument(
        "--base-url", default=os.environ.get("PLUGWAY_BASE_URL", f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/v1"),
        help="the gateway's /v1 URL (default: $PLUGWAY_BASE_URL or %(default)s)",
    )
    chat.add_argument("--key")
    chat.set_defaults(func=cmd_chat)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    with_config(db.add_parser("upgrade", help="apply migrations")).set_defaults(func=cmd_db_upgrade)

    usage = sub.add_parser("usage", help="usage records").add_subparsers(dest="usage_command", required=True)
    replay = with_config(usage.add_parser("replay", help="write usage records a gateway could not write (its spill file)"))
    replay.add_argument("file", nargs="?", help="the spill file (default: the one beside the configured SQLite database, or ./plugway-unwritten-usage.jsonl)")
    replay.set_defaults(func=cmd_usage_replay)

    from runtime.endpoints.cli import add_commands as add_endpoint_commands

    add_endpoint_commands(sub, with_config)

    whatsapp = sub.add_parser("whatsapp", help="WhatsApp tools").add_subparsers(dest="wa_command", required=True)
    simulate = with_config(whatsapp.add_parser("simulate", help="send a signed inbound webhook to a running gateway"))
    simulate.add_argument("--app", required=True)
    simulate.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}")
    simulate.add_argument("--from", dest="sender", default="15550001111")
    simulate.add_argument("text")
    simulate.set_defaults(func=cmd_whatsapp_simulate)
    failed = with_config(whatsapp.add_parser("failed", help="inbound messages that will not be answered (dead letters), and why"))
    failed.add_argument("--limit", type=whole_number(1, MAX_LISTED, "a positive number"), default=50)
    add_json_option(failed, "the messages (with the raw delivery of rejected ones)")
    failed.set_defaults(func=cmd_whatsapp_failed)
    return parser


def _known_failure(exc: Exception) -> tuple[str, int] | None:
    """The one line (and exit code) for a failure the user can meet, or None for a bug."""
    from sqlalchemy.exc import SQLAlchemyError

    from runtime.storage.db import DatabaseUnavailable, failure_reason
    from runtime.storage.keys import InvalidKeyValue, KeyRefused

    if isinstance(exc, CommandFailed):
        return str(exc), exc.code
    if isinstance(exc, DatabaseUnavailable):
        return str(exc), 1
    if isinstance(exc, InvalidKeyValue):
        return str(exc), 2
    if isinstance(exc, KeyRefused):
        return str(exc), 1
    if isinstance(exc, SQLAlchemyError):
        # Parameters are hidden by the engine: no key hash or data in this line.
        return f"database error: {failure_reason(exc)}", 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: Any = args.func(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `plugway plugins list | head`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        known = _known_failure(exc)
        if known is None:
            raise
        return _fail(*known)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
