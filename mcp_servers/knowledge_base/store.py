"""The knowledge base's SQLite store, searched with FTS5.

Articles are Markdown. A file may start with a front-matter block::

    ---
    title: Returns and refunds
    tags: returns, refunds
    ---

otherwise the first ``# heading`` is the title. The slug is the file name
without ``.md``. Loading a folder upserts every article in it, so editing a
file and restarting the server updates the knowledge base.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    slug TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    source TEXT
);
CREATE VIRTUAL TABLE IF NOT EXISTS articles_fts USING fts5(
    slug UNINDEXED, title, body, tags, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class ArticleSource:
    slug: str
    title: str
    body: str
    tags: list[str] = field(default_factory=list)
    source: str | None = None


def parse_markdown(slug: str, text: str, source: str | None = None) -> ArticleSource:
    tags: list[str] = []
    title: str | None = None
    body = text.lstrip("\ufeff")
    front = re.match(r"^---\s*\n(.*?)\n---\s*\n", body, flags=re.DOTALL)
    if front:
        body = body[front.end() :]
        for line in front.group(1).splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key == "title" and value:
                title = value.strip("\"'")
            elif key == "tags" and value:
                tags = [t.strip().strip("\"'") for t in value.strip("[]").split(",") if t.strip()]
    if title is None:
        heading = re.search(r"^#\s+(.+)$", body, flags=re.MULTILINE)
        title = (
            heading.group(1).strip()
            if heading
            else slug.replace("-", " ").replace("_", " ").capitalize()
        )
    return ArticleSource(slug=slug, title=title, body=body.strip(), tags=tags, source=source)


def read_folder(folder: str | Path) -> list[ArticleSource]:
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"knowledge base folder not found: {root}")
    articles = []
    for path in sorted(root.rglob("*.md")):
        slug = path.relative_to(root).with_suffix("").as_posix().replace("/", "-").lower()
        articles.append(parse_markdown(slug, path.read_text(encoding="utf-8"), source=str(path)))
    return articles


def fts_query(text: str) -> str | None:
    """User text as a safe FTS5 query: every word quoted (no syntax errors), any may match."""
    words = _WORD.findall(text.lower())
    if not words:
        return None
    return " OR ".join(f'"{word}"' for word in dict.fromkeys(words))


class KnowledgeStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def initialise(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.executescript(SCHEMA)

    def count(self) -> int:
        with self.connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0])

    def upsert(self, articles: Iterable[ArticleSource]) -> int:
        n = 0
        with self.connect() as conn:
            for article in articles:
                tags = ", ".join(article.tags)
                conn.execute("DELETE FROM articles WHERE slug = ?", (article.slug,))
                conn.execute("DELETE FROM articles_fts WHERE slug = ?", (article.slug,))
                conn.execute(
                    "INSERT INTO articles (slug, title, body, tags, source) VALUES (?, ?, ?, ?, ?)",
                    (article.slug, article.title, article.body, tags, article.source),
                )
                conn.execute(
                    "INSERT INTO articles_fts (slug, title, body, tags) VALUES (?, ?, ?, ?)",
                    (article.slug, article.title, article.body, tags),
                )
                n += 1
        return n

    def search(self, text: str, limit: int) -> list[dict[str, Any]]:
        query = fts_query(text)
        if query is None:
            return []
        with self.connect() as conn:
            rows = conn.execute(
                """
                SELECT slug, title, tags,
                       snippet(articles_fts, 2, '**', '**', ' … ', 24) AS snippet,
                       bm25(articles_fts, 0.0, 5.0, 1.0, 3.0) AS rank
                FROM articles_fts WHERE articles_fts MATCH ?
                ORDER BY rank LIMIT ?
                """,
                (query, limit),
            ).fetchall()
        return [dict(row) for row in rows]

    def get(self, slug: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM articles WHERE slug = ?", (slug.strip().lower(),)
            ).fetchone()
        return dict(row) if row else None

    def list(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT slug, title, tags FROM articles ORDER BY title").fetchall()
        return [dict(row) for row in rows]
