"""Property-based: whatever a signed delivery holds, parsing it raises nothing but
MalformedPayload (and that only for a body that is not a JSON object), and storing what
was parsed never fails, on a real SQLite and PostgreSQL database through the real store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel

from runtime.config import WhatsAppAppConfig
from runtime.storage.db import make_engine
from workers.whatsapp.models import WHATSAPP_TABLES
from workers.whatsapp.payloads import (
    MalformedPayload,
    encode,
    intent_for,
    parse_delivery,
)
from workers.whatsapp.store import InboundStore

APP = WhatsAppAppConfig(
    id="app",
    organisation="acme",
    phone_number_id="1",
    access_token="t",
    app_secret="s",
    verify_token="v",
    model="m",
)
inbound, _outbound, status_events = WHATSAPP_TABLES

# Bounded so the whole file runs in a few seconds on two shared cores.
BOUNDED = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

huge_integers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 5, max_value=2**64 + 5),
    st.integers(min_value=-(2**64), max_value=-(2**63) + 5),
    st.integers(min_value=10**19, max_value=10**400),  # beyond 64 bits, beyond a double
)
long_strings = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=190, max_value=1200).map(lambda n: "w" * n),
    st.text(min_size=1, max_size=3).map(lambda s: s * 300),  # long, with NULs and astral characters
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    huge_integers,
    st.floats(allow_nan=False, allow_infinity=False),
    long_strings,
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def sometimes_wrong(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right shape most of the time, any JSON value otherwise."""
    return st.one_of(right, right, json_values)


def fields(**shapes: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An object whose every field may be missing, right, or of a wrong type."""
    return st.fixed_dictionaries(
        {}, optional={name: sometimes_wrong(shape) for name, shape in shapes.items()}
    )


identifiers = st.one_of(
    st.from_regex(r"\Awamid\.[A-Za-z0-9]{4,40}\Z"), st.from_regex(r"\A[0-9]{6,15}\Z"), long_strings
)
timestamps = st.one_of(
    st.integers(min_value=0, max_value=2**40).map(str),
    st.just(str(int(time.time()))),
    st.just("12345678901234567890"),
    huge_integers,
)
message_types = st.sampled_from(
    [
        "text",
        "image",
        "interactive",
        "button",
        "location",
        "contacts",
        "audio",
        "reaction",
        "sticker",
        "x" * 60,
    ]
)
messages = fields(
    id=identifiers,
    **{"from": identifiers},
    user_id=identifiers,
    timestamp=timestamps,
    type=message_types,
    text=fields(body=long_strings),
    image=fields(caption=long_strings, filename=long_strings),
    interactive=fields(
        button_reply=fields(title=long_strings, description=long_strings), nfm_reply=json_values
    ),
    button=fields(text=long_strings),
    location=fields(name=long_strings, latitude=json_values),
    contacts=st.lists(
        fields(name=fields(formatted_name=long_strings), phones=json_values), max_size=2
    ),
)
statuses = fields(
    id=identifiers,
    status=st.sampled_from(["sent", "delivered", "read", "failed", "s" * 25]),
    timestamp=timestamps,
    recipient_id=identifiers,
    errors=st.lists(
        fields(code=json_values, title=long_strings, error_data=fields(details=long_strings)),
        max_size=2,
    ),
)
values = fields(
    metadata=fields(phone_number_id=st.sampled_from(["1", "2"])),
    contacts=st.lists(fields(wa_id=identifiers, profile=fields(name=long_strings)), max_size=2),
    messages=st.lists(sometimes_wrong(messages), max_size=4),
    statuses=st.lists(sometimes_wrong(statuses), max_size=3),
)
deliveries = fields(
    object=st.just("whatsapp_business_account"),
    entry=st.lists(
        sometimes_wrong(
            fields(
                id=identifiers, changes=st.lists(sometimes_wrong(fields(value=values)), max_size=3)
            )
        ),
        max_size=3,
    ),
)


def parse_or_refuse(body: bytes) -> Any:
    try:
        return parse_delivery(body)
    except MalformedPayload:
        return None


@given(payload=deliveries)
@BOUNDED
def test_a_json_object_always_parses(payload: dict[str, Any]) -> None:
    delivery = parse_delivery(encode(payload))
    for message in delivery.messages:
        intent_for(message.raw)  # the worker's reading of a stored message never raises either
    for event in delivery.messages + delivery.statuses:
        assert 0 <= event.timestamp < 2**63
        orjson.dumps(event.raw)  # stored as received, not replaced by a placeholder
    for rejected in delivery.rejected:
        assert rejected.reason
        orjson.loads(rejected.raw_json)  # the event as received, as JSON the database can hold


@given(value=json_values)
@BOUNDED
def test_anything_else_is_refused_only_with_malformed_payload(value: Any) -> None:
    delivery = parse_or_refuse(encode(value))
    assert (delivery is None) == (not isinstance(value, dict))


@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@BOUNDED
def test_arbitrary_bytes_are_parsed_or_refused_with_malformed_payload(body: bytes) -> None:
    parse_or_refuse(body)


def one_message(message_json: bytes) -> bytes:
    return (
        b'{"entry": [{"changes": [{"value": {"metadata": {"phone_number_id": "1"}, "messages": ['
        + message_json
        + b"]}}]}]}"
    )


# JSON that orjson refuses or cannot write back, inside an otherwise good message.
LONE_SURROGATE_AND_HUGE_NUMBERS = one_message(
    b'{"id": "wamid.A", "from": "1", "type": "text", "text": {"body": "\\ud800 lone \\ud83d\\ude00"},'
    b' "n": 1e400, "m": 123456789012345678901234567890, "k": -99999999999999999999}'
)
NESTED_300_DEEP = one_message(
    b'{"id": "wamid.B", "from": "1", "type": "text", "text": {"body": "hi"}, "deep": '
    + b"[" * 300
    + b"]" * 300
    + b"}"
)


def test_json_that_orjson_refuses_still_parses() -> None:
    [message] = parse_delivery(LONE_SURROGATE_AND_HUGE_NUMBERS).messages
    assert message.raw["text"]["body"] == "\ufffd lone \U0001f600"  # a lone surrogate is not UTF-8
    assert intent_for(message.raw).text == "\ufffd lone \U0001f600"
    orjson.dumps(message.raw)

    deep = parse_delivery(NESTED_300_DEEP)
    assert deep.messages == []
    [rejected] = deep.rejected
    assert rejected.event_id == "wamid.B" and "nested" in rejected.reason
    orjson.loads(rejected.raw_json)


def test_those_deliveries_are_stored(engine: Engine) -> None:
    store = InboundStore(engine)
    for body in (LONE_SURROGATE_AND_HUGE_NUMBERS, NESTED_300_DEEP):
        delivery = parse_delivery(body)
        store.store_delivery(
            [(APP, m) for m in delivery.messages],
            [],
            [(APP, r) for r in delivery.rejected],
            max_age_s=3600,
        )
    with engine.connect() as conn:
        rows = {row.wamid: row for row in conn.execute(select(inbound)).all()}
    assert rows["wamid.A"].status == "pending" and rows["wamid.A"].text == "\ufffd lone \U0001f600"
    assert rows["wamid.B"].status == "rejected" and "nested" in rows["wamid.B"].last_error


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine, tables=WHATSAPP_TABLES)
    yield engine
    engine.dispose()


@given(payload=deliveries)
@BOUNDED
def test_storing_any_parsed_delivery_never_fails(engine: Engine, payload: dict[str, Any]) -> None:
    delivery = parse_delivery(encode(payload))
    store = InboundStore(engine)
    # Every event goes to one app, whatever its phone number, to put all of them through the store.
    store.store_delivery(
        [(APP, message) for message in delivery.messages],
        [(APP, status) for status in delivery.statuses],
        [(APP, rejected) for rejected in delivery.rejected],
        max_age_s=3600,
    )
    with engine.connect() as conn:
        wamids = {row.wamid: row for row in conn.execute(select(inbound)).all()}
        events = conn.execute(select(func.count()).select_from(status_events)).scalar_one()
    for message in delivery.messages:
        # a good message is stored as it came: nothing was cut to make it fit
        assert message.wamid in wamids
    for rejected in delivery.rejected:
        if rejected.kind == "message":
            assert rejected.event_id in wamids
    assert events >= len({(s.wamid, s.status, s.timestamp) for s in delivery.statuses})
    for row in wamids.values():  # SQLite does not enforce VARCHAR sizes: check them here
        assert len(row.wamid) <= 400 and len(row.sender) <= 200 and len(row.message_type) <= 50
        assert row.sender_name is None or len(row.sender_name) <= 400
