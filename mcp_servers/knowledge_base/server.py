"""knowledge_base: FAQ and help-centre articles with full-text search.

Tools: ``search_articles``, ``get_article``, ``list_articles``. The SQLite
database lives at ``KNOWLEDGE_BASE_DB`` (default ``./plugway-data/knowledge_base.db``).
``KNOWLEDGE_BASE_ARTICLES`` names a folder of Markdown files loaded (upserted)
at start-up; with no folder and an empty database, demo articles are loaded.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel

from mcp_servers.knowledge_base.demo_articles import DEMO_ARTICLES
from mcp_servers.knowledge_base.store import KnowledgeStore, parse_markdown, read_folder

DEFAULT_DB = Path("plugway-data") / "knowledge_base.db"
T = TypeVar("T")
# Tool annotations: clients (plugway among them) show them, and may ask before running writes.
READS = ToolAnnotations(read_only_hint=True)


class SearchHit(BaseModel):
    slug: str
    title: str
    snippet: str
    tags: list[str]


class SearchResults(BaseModel):
    query: str
    results: list[SearchHit]


class Article(BaseModel):
    slug: str
    title: str
    tags: list[str]
    body: str


class ArticleSummary(BaseModel):
    slug: str
    title: str
    tags: list[str]


class ArticleIndex(BaseModel):
    articles: list[ArticleSummary]


@dataclass
class KnowledgeState:
    store: KnowledgeStore


def _tags(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def load(store: KnowledgeStore, folder: str | None) -> int:
    store.initialise()
    if folder:
        return store.upsert(read_folder(folder))
    if store.count() == 0:
        return store.upsert(parse_markdown(slug, text) for slug, text in DEMO_ARTICLES.items())
    return 0


def build_server(
    db_path: str | os.PathLike[str] | None = None,
    *,
    articles_dir: str | os.PathLike[str] | None = None,
) -> MCPServer[KnowledgeState]:
    """The knowledge-base server; arguments default to ``KNOWLEDGE_BASE_DB``/``KNOWLEDGE_BASE_ARTICLES``."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[KnowledgeState]) -> AsyncIterator[KnowledgeState]:
        store = KnowledgeStore(Path(db_path or os.environ.get("KNOWLEDGE_BASE_DB") or DEFAULT_DB))
        folder = articles_dir or os.environ.get("KNOWLEDGE_BASE_ARTICLES") or None
        await anyio.to_thread.run_sync(load, store, str(folder) if folder else None)
        yield KnowledgeState(store)

    server: MCPServer[KnowledgeState] = MCPServer(
        "knowledge_base",
        instructions="Help-centre articles. Search first, then read the best article before answering.",
        lifespan=lifespan,
    )

    async def run(ctx: Context, fn: Callable[..., T], *args: Any) -> T:
        # SQLite is blocking I/O: keep it off the server's event loop.
        state = cast(KnowledgeState, ctx.request_context.lifespan_context)
        return await anyio.to_thread.run_sync(functools.partial(fn, state.store, *args))

    @server.tool(annotations=READS)
    async def search_articles(query: str, ctx: Context, limit: int = 5) -> SearchResults:
        """Full-text search of the help-centre articles; best matches first, with snippets."""
        rows = await run(ctx, KnowledgeStore.search, query, max(1, min(limit, 20)))
        hits = [
            SearchHit(slug=r["slug"], title=r["title"], snippet=r["snippet"], tags=_tags(r["tags"]))
            for r in rows
        ]
        return SearchResults(query=query, results=hits)

    @server.tool(annotations=READS)
    async def get_article(slug: str, ctx: Context) -> Article:
        """The full text of one article, by the slug search_articles returned."""
        row = await run(ctx, KnowledgeStore.get, slug)
        if row is None:
            raise ToolError(f"No article '{slug}'. Use search_articles to find the right slug.")
        return Article(
            slug=row["slug"], title=row["title"], tags=_tags(row["tags"]), body=row["body"]
        )

    @server.tool(annotations=READS)
    async def list_articles(ctx: Context) -> ArticleIndex:
        """Every article's slug, title and tags."""
        rows = await run(ctx, KnowledgeStore.list)
        return ArticleIndex(
            articles=[
                ArticleSummary(slug=r["slug"], title=r["title"], tags=_tags(r["tags"]))
                for r in rows
            ]
        )

    return server
