"""support_crm: customers, orders and support tickets for a support assistant.

Tools: ``lookup_customer``, ``list_orders``, ``create_ticket``, ``update_ticket``,
``get_ticket``. The SQLite database lives at ``SUPPORT_CRM_DB`` (default
``./plugway-data/support_crm.db``) and is seeded with demo data when created,
unless ``SUPPORT_CRM_SEED=0``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_servers.support_crm.store import CrmStore, ticket_number

DEFAULT_DB = Path("plugway-data") / "support_crm.db"

TicketStatus = Literal["open", "pending", "resolved", "closed"]
Priority = Literal["low", "normal", "high", "urgent"]
OrderStatus = Literal["processing", "shipped", "delivered", "cancelled", "returned"]
T = TypeVar("T")
# Tool annotations: clients (plugway among them) show them, and may ask before running writes.
READS = ToolAnnotations(read_only_hint=True)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False)


class Customer(BaseModel):
    id: str
    name: str
    email: str
    phone: str | None
    company: str | None
    tier: str


class CustomerMatches(BaseModel):
    query: str
    customers: list[Customer]


class Order(BaseModel):
    id: str
    status: str
    total: float = Field(description="Order total in the order's currency")
    currency: str
    items: list[str]
    tracking_number: str | None
    placed_at: str


class OrderList(BaseModel):
    customer_id: str
    orders: list[Order]


class Ticket(BaseModel):
    id: str
    customer_id: str
    order_id: str | None
    subject: str
    description: str
    status: str
    priority: str
    notes: list[str]
    created_at: str
    updated_at: str


@dataclass
class CrmState:
    store: CrmStore


def _order(row: dict[str, Any]) -> Order:
    return Order(
        id=row["id"],
        status=row["status"],
        total=row["total_cents"] / 100,
        currency=row["currency"],
        items=row["items"],
        tracking_number=row["tracking_number"],
        placed_at=row["placed_at"],
    )


def build_server(
    db_path: str | os.PathLike[str] | None = None, *, seed: bool | None = None
) -> MCPServer[CrmState]:
    """The CRM server; ``db_path``/``seed`` default to ``SUPPORT_CRM_DB``/``SUPPORT_CRM_SEED``."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[CrmState]) -> AsyncIterator[CrmState]:
        path = Path(db_path or os.environ.get("SUPPORT_CRM_DB") or DEFAULT_DB)
        do_seed = seed if seed is not None else os.environ.get("SUPPORT_CRM_SEED", "1") != "0"
        store = CrmStore(path)
        await anyio.to_thread.run_sync(functools.partial(store.initialise, seed=do_seed))
        yield CrmState(store)

    server: MCPServer[CrmState] = MCPServer(
        "support_crm",
        instructions="Customer, order and support-ticket records. Look the customer up first.",
        lifespan=lifespan,
    )

    async def run(ctx: Context, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # SQLite is blocking I/O: keep it off the server's event loop.
        state = cast(CrmState, ctx.request_context.lifespan_context)
        return await anyio.to_thread.run_sync(functools.partial(fn, state.store, *args, **kwargs))

    async def require_customer(ctx: Context, customer_id: str) -> dict[str, Any]:
        customer = await run(ctx, CrmStore.customer, customer_id)
        if customer is None:
            raise ToolError(
                f"No customer with id '{customer_id}'. Use lookup_customer to find the id."
            )
        return customer

    @server.tool(annotations=READS)
    async def lookup_customer(query: str, ctx: Context) -> CustomerMatches:
        """Find customers by customer id, email, phone number, name or company."""
        rows = await run(ctx, CrmStore.find_customers, query)
        return CustomerMatches(
            query=query, customers=[Customer.model_validate(row) for row in rows]
        )

    @server.tool(annotations=READS)
    async def list_orders(
        customer_id: str, ctx: Context, status: OrderStatus | None = None, limit: int = 20
    ) -> OrderList:
        """A customer's orders, newest first, optionally only those with a given status."""
        customer = await require_customer(ctx, customer_id)
        rows = await run(ctx, CrmStore.orders, customer["id"], status, max(1, min(limit, 100)))
        return OrderList(customer_id=customer["id"], orders=[_order(row) for row in rows])

    @server.tool(annotations=WRITES)
    async def create_ticket(
        customer_id: str,
        subject: str,
        description: str,
        ctx: Context,
        priority: Priority = "normal",
        order_id: str | None = None,
    ) -> Ticket:
        """Open a support ticket for a customer, optionally about one of their orders."""
        customer = await require_customer(ctx, customer_id)
        if not subject.strip():
            raise ToolError("The subject must not be empty.")
        if order_id:
            order = await run(ctx, CrmStore.order, order_id)
            if order is None or order["customer_id"] != customer["id"]:
                raise ToolError(
                    f"Order '{order_id}' does not belong to customer '{customer['id']}'."
                )
            order_id = order["id"]
        row = await run(
            ctx,
            CrmStore.create_ticket,
            customer["id"],
            order_id,
            subject.strip(),
            description,
            priority,
        )
        return Ticket.model_validate(row)

    @server.tool(annotations=WRITES)
    async def update_ticket(
        ticket_id: str,
        ctx: Context,
        status: TicketStatus | None = None,
        priority: Priority | None = None,
        note: str | None = None,
    ) -> Ticket:
        """Change a ticket's status or priority and/or add a note to it."""
        if status is None and priority is None and not note:
            raise ToolError("Nothing to update: give a status, a priority or a note.")
        number = ticket_number(ticket_id)
        row = (
            None
            if number is None
            else await run(
                ctx, CrmStore.update_ticket, number, status=status, priority=priority, note=note
            )
        )
        if row is None:
            raise ToolError(f"No ticket with id '{ticket_id}'.")
        return Ticket.model_validate(row)

    @server.tool(annotations=READS)
    async def get_ticket(ticket_id: str, ctx: Context) -> Ticket:
        """One support ticket with its notes."""
        number = ticket_number(ticket_id)
        row = None if number is None else await run(ctx, CrmStore.ticket, number)
        if row is None:
            raise ToolError(f"No ticket with id '{ticket_id}'.")
        return Ticket.model_validate(row)

    return server
