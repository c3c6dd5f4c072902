"""The CRM's SQLite store: customers, their orders, and support tickets.

Plain ``sqlite3`` with one short-lived connection per operation: the server
runs these functions in worker threads, and SQLite connections must not cross
threads. Seeded with demo data the first time a database is created.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    phone TEXT,
    company TEXT,
    tier TEXT NOT NULL DEFAULT 'standard',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    status TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    currency TEXT NOT NULL DEFAULT 'EUR',
    items TEXT NOT NULL,
    tracking_number TEXT,
    placed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders(customer_id, placed_at);
CREATE TABLE IF NOT EXISTS tickets (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    order_id TEXT REFERENCES orders(id),
    subject TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""

DEMO_CUSTOMERS = [
    (
        "C-1001",
        "Ana Pereira",
        "ana.pereira@example.com",
        "+351 912 345 678",
        "Pereira Bakery",
        "gold",
    ),
    ("C-1002", "Jonas Becker", "jonas.becker@example.com", "+49 151 2345 6789", None, "standard"),
    (
        "C-1003",
        "Mei Tanaka",
        "mei.tanaka@example.com",
        "+81 90 1234 5678",
        "Tanaka Design",
        "standard",
    ),
    (
        "C-1004",
        "Omar Haddad",
        "omar.haddad@example.com",
        "+33 6 12 34 56 78",
        "Haddad & Fils",
        "platinum",
    ),
]
DEMO_ORDERS = [
    (
        "O-5001",
        "C-1001",
        "delivered",
        4590,
        ["Stand mixer bowl", "Dough hook"],
        "PT123456789",
        "2026-09-02",
    ),
    ("O-5002", "C-1001", "shipped", 12900, ["Proofing basket x4"], "PT987654321", "2026-11-10"),
    ("O-5003", "C-1002", "processing", 2999, ["Coffee grinder burr set"], None, "2026-11-18"),
    ("O-5004", "C-1003", "cancelled", 8900, ["Drawing tablet stand"], None, "2026-10-05"),
    ("O-5005", "C-1004", "delivered", 45000, ["Espresso machine"], "FR555000111", "2026-08-21"),
    ("O-5006", "C-1004", "returned", 3500, ["Milk jug 600 ml"], "FR555000222", "2026-09-30"),
]
DEMO_TICKETS = [
    (
        "C-1004",
        "O-5006",
        "Refund for returned milk jug",
        "Returned on Oct 3, refund not received yet.",
        "open",
        "normal",
    ),
]

TICKET_STATUSES = ("open", "pending", "resolved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def ticket_id(number: int) -> str:
    return f"T-{number:04d}"


def ticket_number(ticket: str) -> int | None:
    match = re.fullmatch(r"(?:T-)?0*(\d+)", ticket.strip(), flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


class CrmStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def initialise(self, *, seed: bool = True) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.executescript(SCHEMA)
            empty = conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 0
            if seed and empty:
                self._seed(conn)

    def _seed(self, conn: sqlite3.Connection) -> None:
        created = "2026-01-15T09:00:00+00:00"
        conn.executemany(
            "INSERT INTO customers (id, name, email, phone, company, tier, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*row, created) for row in DEMO_CUSTOMERS],
        )
        conn.executemany(
            "INSERT INTO orders (id, customer_id, status, total_cents, items, tracking_number, placed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (o, c, s, t, json.dumps(items), tr, placed)
                for o, c, s, t, items, tr, placed in DEMO_ORDERS
            ],
        )
        for customer, order, subject, description, status, priority in DEMO_TICKETS:
            conn.execute(
                "INSERT INTO tickets (customer_id, order_id, subject, description, status, priority,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (customer, order, subject, description, status, priority, created, created),
            )

    # ----- customers -------------------------------------------------------------

    def find_customers(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        query = query.strip()
        if not query:
            return []
        # Country prefixes are written many ways (+49, 0049, none): phones match
        # on their last nine digits.
        digits = re.sub(r"\D", "", query)
        with self.connect() as conn:
            conn.create_function(
                "digits", 1, lambda v: re.sub(r"\D", "", v or ""), deterministic=True
            )
            rows = conn.execute(
                """
                SELECT * FROM customers
                WHERE upper(id) = upper(:q) OR lower(email) = lower(:q)
                   OR (length(:digits) >= 7 AND substr(digits(phone), -9) = substr(:digits, -9))
                   OR name LIKE '%' || :q || '%' OR company LIKE '%' || :q || '%'
                ORDER BY (upper(id) = upper(:q) OR lower(email) = lower(:q)) DESC, name
                LIMIT :limit
                """,
                {"q": query, "digits": digits, "limit": limit},
            ).fetchall()
        return [dict(row) for row in rows]

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM customers WHERE upper(id) = upper(?)", (customer_id.strip(),)
            ).fetchone()
        return dict(row) if row else None

    # ----- orders ----------------------------------------------------------------

    def orders(self, customer_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT * FROM orders WHERE customer_id = ?"
        params: list[Any] = [customer_id]
        if status:
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY placed_at DESC LIMIT ?"
        params.append(limit)
        with self.connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [{**dict(row), "items": json.loads(row["items"])} for row in rows]

    def order(self, order_id: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM orders WHERE upper(id) = upper(?)", (order_id.strip(),)
            ).fetchone()
        return {**dict(row), "items": json.loads(row["items"])} if row else None

    # ----- tickets ---------------------------------------------------------------

    def create_ticket(
        self, customer_id: str, order_id: str | None, subject: str, description: str, priority: str
    ) -> dict[str, Any]:
        stamp = now_iso()
        with self.connect() as conn:
            cursor = conn.execute(
                "INSERT INTO tickets (customer_id, order_id, subject, description, status, priority,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?)",
                (customer_id, order_id, subject, description, priority, stamp, stamp),
            )
            number = cursor.lastrowid
        assert number is not None
        ticket = self.ticket(number)
        assert ticket is not None
        return ticket

    def ticket(self, number: int) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM tickets WHERE number = ?", (number,)).fetchone()
        return _ticket_row(row) if row else None

    def update_ticket(
        self, number: int, *, status: str | None, priority: str | None, note: str | None
    ) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM tickets WHERE number = ?", (number,)).fetchone()
            if row is None:
                return None
            notes = json.loads(row["notes"])
            stamp = now_iso()
            if note:
                notes.append(f"{stamp} {note}")
            conn.execute(
                "UPDATE tickets SET status = ?, priority = ?, notes = ?, updated_at = ? WHERE number = ?",
                (
                    status or row["status"],
                    priority or row["priority"],
                    json.dumps(notes),
                    stamp,
                    number,
                ),
            )
        return self.ticket(number)


def _ticket_row(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["id"] = ticket_id(data.pop("number"))
    data["notes"] = json.loads(data["notes"])
    return data
