"""Stored responses are saved with group commit: many concurrent saves, few transactions, each caller
back only once its row is committed; a row the database refuses fails its own caller only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from runtime.frontdoors.responses import store
from runtime.storage.db import open_database


def _row(response_id: str) -> dict[str, object]:
    return store.row_for(
        response={"id": response_id, "object": "response", "model": "gpt-test", "output": []},
        organisation_id="acme",
        state={"messages": [{"role": "user", "content": response_id}]},
        retention_days=30,
    )


async def test_concurrent_saves_share_commits_and_are_readable_when_they_return(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path}/responses.db")
    assert engine is not None
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    saver = store.ResponseSaver(engine)

    async def save_then_read(n: int) -> store.Saved | None:
        await saver.save(_row(f"resp_{n}"))
        # Committed by the time save returns: another process could read it now.
        return await asyncio.to_thread(store.load, engine, organisation_id="acme", response_id=f"resp_{n}")

    saved = await asyncio.gather(*(save_then_read(n) for n in range(60)))
    assert all(s is not None and s.state["messages"][0]["content"] == f"resp_{n}" for n, s in enumerate(saved))
    assert 1 <= len(commits) <= 10  # one for the first save, then one per batch gathered meanwhile
    engine.dispose()


async def test_a_refused_row_fails_its_caller_alone(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path}/responses.db")
    assert engine is not None
    saver = store.ResponseSaver(engine)
    await saver.save(_row("resp_taken"))

    # One batch: the database refuses it for the duplicate, and each row is then written alone.
    outcomes = await asyncio.gather(
        saver.save(_row("resp_first")), saver.save(_row("resp_taken")), saver.save(_row("resp_neighbour")),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert await asyncio.to_thread(store.load, engine, organisation_id="acme", response_id="resp_neighbour") is not None

    await saver.save(_row("resp_after"))
    assert await asyncio.to_thread(store.load, engine, organisation_id="acme", response_id="resp_after") is not None
    with pytest.raises(IntegrityError):
        await saver.save(_row("resp_after"))
    engine.dispose()
