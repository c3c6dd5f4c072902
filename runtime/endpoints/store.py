"""Endpoints stored in the database (created through the management API), beside the YAML ones.

The registry answers "which endpoint is ``org/slug``?" for every process: YAML
endpoints from the configuration, stored ones from the database, re-read when
the newest ``updated_at`` moves (checked at most every ``refresh_s``, so a
change made on one gateway process reaches all of them within that time, no
restart). A YAML endpoint is read-only; a stored one can never take a YAML
endpoint's slug.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import orjson
from sqlalchemy import Column, Engine, Text, UniqueConstraint, delete, func, insert, select, update
from sqlmodel import Field, SQLModel

from runtime.config import EndpointConfig, OrganisationConfig
from runtime.storage.models import COUNTER, utcnow


class StoredEndpoint(SQLModel, table=True):
    """An endpoint created through the management API (YAML endpoints live in the configuration)."""

    __tablename__ = "stored_endpoints"
    __table_args__ = (UniqueConstraint("organisation_id", "slug", name="uq_stored_endpoints_org_slug"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=COUNTER)
    organisation_id: str = Field(index=True, max_length=128)
    slug: str = Field(max_length=64)
    definition: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


_TABLE = SQLModel.metadata.tables["stored_endpoints"]


@dataclass(frozen=True)
class Listed:
    organisation_id: str
    endpoint: EndpointConfig
    source: str  # "config" (read-only) or "api"


def _load(engine: Engine) -> tuple[Any, dict[tuple[str, str], EndpointConfig]]:
    with engine.connect() as connection:
        marker = connection.execute(select(func.max(_TABLE.c.updated_at), func.count())).one()
        rows = connection.execute(select(_TABLE.c.organisation_id, _TABLE.c.slug, _TABLE.c.definition)).all()
    stored = {}
    for organisation_id, slug, definition in rows:
        stored[(organisation_id, slug)] = EndpointConfig.model_validate(orjson.loads(definition))
    return tuple(marker), stored


def stored_endpoints(engine: Engine) -> dict[tuple[str, str], EndpointConfig]:
    """(organisation id, slug) -> every endpoint stored through the management API."""
    return _load(engine)[1]


def insert_endpoint(engine: Engine, organisation_id: str, endpoint: EndpointConfig) -> None:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(_TABLE),
            {"organisation_id": organisation_id, "slug": endpoint.slug, "definition": endpoint.model_dump_json(), "created_at": now, "updated_at": now},
        )


def replace_endpoint(engine: Engine, organisation_id: str, endpoint: EndpointConfig) -> bool:
    with engine.begin() as connection:
        result = connection.execute(
            update(_TABLE)
            .where(_TABLE.c.organisation_id == organisation_id, _TABLE.c.slug == endpoint.slug)
            .values(definition=endpoint.model_dump_json(), updated_at=datetime.now(UTC))
        )
    return bool(result.rowcount)


def delete_endpoint(engine: Engine, organisation_id: str, slug: str) -> bool:
    # Other processes notice a deletion by the row count, part of the marker they watch.
    with engine.begin() as connection:
        result = connection.execute(delete(_TABLE).where(_TABLE.c.organisation_id == organisation_id, _TABLE.c.slug == slug))
    return bool(result.rowcount)


class EndpointRegistry:
    """YAML and stored endpoints, as one lookup, fresh within ``refresh_s`` on every process."""

    def __init__(self, engine: Engine, organisations: list[OrganisationConfig], *, refresh_s: float = 2.0) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._organisations = {o.id: o for o in organisations}
        self._stored: dict[tuple[str, str], EndpointConfig] = {}
        self._marker: Any = None
        self._checked_at = -1e9
        self._lock = asyncio.Lock()

    async def refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._checked_at < self.refresh_s:
            return
        async with self._lock:
            if not force and time.monotonic() - self._checked_at < self.refresh_s:
                return
            marker, stored = await anyio.to_thread.run_sync(_load, self.engine)
            self._checked_at = time.monotonic()
            if marker != self._marker or force:
                self._marker, self._stored = marker, stored

    async def get(self, organisation: OrganisationConfig, slug: str) -> EndpointConfig | None:
        configured = organisation.endpoint(slug)
        if configured is not None:
            return configured
        await self.refresh()
        return self._stored.get((organisation.id, slug))

    async def listing(self, organisation_id: str | None = None) -> list[Listed]:
        await self.refresh()
        out = [
            Listed(org.id, endpoint, "config")
            for org in self._organisations.values()
            if organisation_id in (None, org.id)
            for endpoint in org.endpoints
        ]
        out.extend(
            Listed(org_id, endpoint, "api")
            for (org_id, _slug), endpoint in sorted(self._stored.items())
            if organisation_id in (None, org_id)
        )
        return out
