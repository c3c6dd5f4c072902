"""The queue's atomic claims, straight against the database from several threads."""

from __future__ import annotations

import threading
import time
from collections import Counter

from sqlalchemy import Engine
from sqlmodel import SQLModel

from runtime.config import WhatsAppAppConfig
from runtime.storage.db import make_engine
from workers.whatsapp.models import WHATSAPP_TABLES
from workers.whatsapp.payloads import InboundMessage, text_message
from workers.whatsapp.store import InboundStore

APP = WhatsAppAppConfig(
    id="app", organisation="acme", phone_number_id="1", access_token="t", app_secret="s",
    verify_token="v", model="m",
)


def _engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine, tables=WHATSAPP_TABLES)
    return engine


def _message(sender: str, text: str, ts: int) -> InboundMessage:
    raw = text_message(sender, text, timestamp=ts)
    return InboundMessage("1", raw["id"], sender, None, "text", ts, raw)


def test_concurrent_claimers_never_share_a_message_and_keep_conversation_order(database_url: str) -> None:
    engine = _engine(database_url)
    store = InboundStore(engine)
    now = int(time.time())
    messages = [_message(f"user{c}", f"c{c}m{i}", now + i) for c in range(6) for i in range(4)]
    store.store_delivery([(APP, m) for m in messages], [], max_age_s=3600)

    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.0:
            got = store.claim(owner=name, lease_s=30, limit=2)
            for message in got:
                with lock:
                    # while we hold it, no other message of the conversation may be claimed
                    claimed.append((message.conversation_key, message.text or ""))
                assert store.finish(message.id, name, "answered")
            if got:
                idle_since = time.monotonic()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    texts = [text for _, text in claimed]
    assert Counter(texts) == Counter(m.raw["text"]["body"] for m in messages)  # each exactly once
    for c in range(6):
        in_order = [t for key, t in claimed if key == f"app:user{c}"]
        assert in_order == [f"c{c}m{i}" for i in range(4)]
    engine.dispose()


def test_a_live_lease_blocks_its_conversation_and_an_expired_one_is_reclaimed(database_url: str) -> None:
    engine = _engine(database_url)
    store = InboundStore(engine)
    now = int(time.time())
    store.store_delivery(
        [(APP, _message("u", "first", now)), (APP, _message("u", "second", now + 1)),
         (APP, _message("v", "other", now))],
        [], max_age_s=3600,
    )
    [a, b] = store.claim(owner="a", lease_s=0.3, limit=5)
    assert {a.text, b.text} == {"first", "other"}
    assert store.claim(owner="b", lease_s=30, limit=5) == []  # "second" waits for "first"
    time.sleep(0.4)
    again = store.claim(owner="b", lease_s=30, limit=5)
    assert sorted(m.text or "" for m in again) == ["first", "other"]  # expired leases, same order
    assert all(m.attempts == 2 for m in again)
    first = next(m for m in again if m.text == "first")
    assert not store.finish(first.id, "a", "answered")  # the old owner lost it
    assert store.finish(first.id, "b", "answered")
    [second] = store.claim(owner="b", lease_s=30, limit=5)
    assert second.text == "second"
    engine.dispose()


def test_redelivered_message_ids_are_stored_once(database_url: str) -> None:
    engine = _engine(database_url)
    store = InboundStore(engine)
    message = _message("u", "hello", int(time.time()))
    results = []

    def deliver() -> None:
        results.append(store.store_delivery([(APP, message)], [], max_age_s=3600))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.stored for r in results) == 1
    assert sum(r.duplicates for r in results) == 5
    engine.dispose()
