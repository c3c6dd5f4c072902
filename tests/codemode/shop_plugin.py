"""A small shop for code-mode tests: dependent lookups, a tool that hangs, a tool that leaks an email."""

from __future__ import annotations

import asyncio

from runtime import ToolError, hookimpl

CUSTOMERS = {"ada@example.com": "C-100", "bob@example.com": "C-200"}
ORDERS = {"C-100": [{"id": "O-1", "total": 30.0}, {"id": "O-2", "total": 12.5}], "C-200": [{"id": "O-3", "total": 99.0}]}
# Tags of hang() calls that started, and of those that were cancelled (the gateway runs in this process).
STARTED: list[str] = []
CANCELLED: list[str] = []


def find_customer(email: str) -> dict[str, str]:
    """Find a customer by email address."""
    if email not in CUSTOMERS:
        raise ToolError(f"no customer with email {email}")
    return {"customer_id": CUSTOMERS[email], "email": email}


def list_orders(customer_id: str) -> list[dict[str, object]]:
    """List a customer's orders with their totals."""
    return ORDERS.get(customer_id, [])


def order_total(order_ids: list[str], currency: str = "EUR") -> dict[str, object]:
    """Sum the totals of some orders."""
    totals = {str(o["id"]): float(str(o["total"])) for orders in ORDERS.values() for o in orders}
    return {"total": sum(totals[i] for i in order_ids if i in totals), "currency": currency}


def contact_card(customer_id: str) -> str:
    """A customer's contact card (it holds their email address)."""
    email = next(e for e, c in CUSTOMERS.items() if c == customer_id)
    return f"Customer {customer_id}, write to {email}"


async def hang(tag: str) -> str:
    """Wait a long time (tests cancel it)."""
    STARTED.append(tag)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        CANCELLED.append(tag)
        raise
    return "finished"


@hookimpl
def register_tools(register):  # type: ignore[no-untyped-def]
    for tool in (find_customer, list_orders, order_total, contact_card, hang):
        register(tool)
