"""``/v1/responses``: OpenAI's Responses API, with plugins as hosted-MCP-shaped tools."""

from runtime.frontdoors.responses.routes import router
from runtime.frontdoors.responses.store import StoredResponse

__all__ = ["StoredResponse", "router"]


async def purge_expired(gateway: object, *, interval_s: float = 3600.0) -> None:
    """Delete expired stored responses now and then (reads already ignore them)."""
    import asyncio
    import logging

    import anyio.to_thread

    from runtime.frontdoors.responses.store import purge_expired as purge

    engine = gateway.engine  # type: ignore[attr-defined]
    while True:
        try:
            removed = await anyio.to_thread.run_sync(purge, engine)
            if removed:
                logging.getLogger("plugway.responses").info("purged %d expired stored responses", removed)
        except Exception:
            logging.getLogger("plugway.responses").warning("purging expired stored responses failed", exc_info=True)
        await asyncio.sleep(interval_s)
