"""Entry points for the CLI: ``plugway worker`` and ``plugway whatsapp simulate``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from datetime import UTC, datetime

import httpx
import orjson

from runtime.cli_output import Column, print_json, print_rows
from runtime.config import Settings
from workers.whatsapp.payloads import SIGNATURE_HEADER, change, delivery, encode, sign, text_message

log = logging.getLogger("plugway.whatsapp")

DEFAULT_SIMULATED_SENDER = "15550001234"


def simulate(
    base_url: str,
    settings: Settings,
    app_id: str,
    text: str,
    sender: str = DEFAULT_SIMULATED_SENDER,
    *,
    timeout_s: float = 10.0,
) -> int:
    """POST a correctly signed inbound text webhook for ``app_id``; print the answer. Exit code."""
    app = next((a for a in settings.whatsapp.apps if a.id == app_id), None)
    if app is None:
        known = ", ".join(a.id for a in settings.whatsapp.apps) or "none configured"
        print(f"error: unknown WhatsApp app '{app_id}' (known: {known})", file=sys.stderr)
        return 2
    message = text_message(sender, text)
    body = encode(delivery(change(app.phone_number_id, messages=[message], contact_name="Simulator")))
    url = base_url.rstrip("/") + "/webhooks/whatsapp"
    started = time.perf_counter()
    try:
        response = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(app.app_secret, body)},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"POST {url} -> {response.status_code} in {elapsed_ms:.0f} ms")
    print(f"message id: {message['id']} from {sender}")
    try:
        print(orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode())
    except ValueError:
        print(response.text)
    return 0 if response.status_code == 200 else 1


RAW_SHOWN_CHARS = 200

DEAD_LETTER_COLUMNS = (
    Column("finished", "finished_at"),
    Column("status", "status"),
    Column("app", "app", identifier=True),
    Column("sender", "sender", identifier=True, optional=True),
    Column("message id", "wamid", identifier=True),
    Column("attempts", "attempts", optional=True),
    # A rejected message had no text taken from it: show the start of what came.
    Column("text", lambda row: row["text"] if row["status"] != "rejected" else "raw: " + (row["raw"] or "")[:RAW_SHOWN_CHARS]),
    Column("error", "error"),
)


def dead_letters(settings: Settings, *, limit: int = 50, as_json: bool = False) -> int:
    """``plugway whatsapp failed``: the messages that will not be answered, and why.

    Dead letters (``failed``: a permanent send error, or attempts exhausted) and
    ``rejected`` messages (malformed as received), newest first.
    """
    from sqlalchemy import select

    from runtime.storage.db import make_engine
    from workers.whatsapp.models import WHATSAPP_TABLES, InboundStatus

    table = WHATSAPP_TABLES[0]
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                select(table)
                .where(table.c.status.in_([InboundStatus.failed, InboundStatus.rejected]))
                .order_by(table.c.finished_at.desc())
                .limit(limit)
            ).all()
    finally:
        engine.dispose()
    rows = [
        {
            "finished_at": datetime.fromtimestamp(row.finished_at or row.received_at, UTC),
            "status": row.status,
            "app": row.app_id, "sender": row.sender, "wamid": row.wamid, "attempts": row.attempts,
            "text": row.text, "raw": row.raw if row.status == InboundStatus.rejected else None, "error": row.last_error,
        }
        for row in found
    ]
    if as_json:
        print_json({"failed": rows})
    else:
        print_rows(rows, DEAD_LETTER_COLUMNS, empty="no failed or rejected WhatsApp messages")
    return 0


async def run_worker(settings: Settings) -> None:
    """``plugway worker``: a Gateway plus a WhatsApp worker, until SIGTERM or SIGINT."""
    from runtime.gateway import Gateway  # the runtime is only needed when actually serving
    from workers.whatsapp import models  # noqa: F401  (tables exist before create_all)
    from workers.whatsapp.worker import WhatsAppWorker

    gateway = await Gateway.create(settings)
    worker = WhatsAppWorker(gateway)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
        print(f"plugway whatsapp worker {worker.owner} running ({len(worker.apps)} apps)", flush=True)
        await stop.wait()
    finally:
        await worker.stop()
        await gateway.aclose()
