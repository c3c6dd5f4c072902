"""Entry points for the CLI: ``plugway worker`` and ``plugway whatsapp simulate``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time

import httpx
import orjson

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


def dead_letters(settings: Settings, *, limit: int = 50) -> int:
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
            rows = conn.execute(
                select(table)
                .where(table.c.status.in_([InboundStatus.failed, InboundStatus.rejected]))
                .order_by(table.c.finished_at.desc())
                .limit(limit)
            ).all()
    finally:
        engine.dispose()
    if not rows:
        print("no failed or rejected WhatsApp messages")
        return 0
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.finished_at or row.received_at))
        if row.status == InboundStatus.rejected:
            # No text was taken from a malformed message: show it as it came.
            detail = f"    raw:   {row.raw[:120]}"
        else:
            detail = f"    text:  {(row.text or '-')[:120]}"
        print(
            f"{when}Z  {row.status}  {row.app_id}  {row.sender or '-'}  {row.wamid}  attempts={row.attempts}\n"
            f"{detail}\n    error: {row.last_error or '-'}"
        )
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
