"""The bundled MCP servers on their own, through the SDK's client (in memory and as processes)."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from mcp_servers.knowledge_base import build_server as build_kb
from mcp_servers.support_crm import build_server as build_crm
from runtime.config import PluginRef
from runtime.mcp import McpManager
from runtime.mcp.bundled import bundled_plugin_refs
from runtime.plugin_host.tool import ToolError
from tests.mcp.mcp_helpers import ORG, ctx, eventually, placed


async def test_crm_lookup_orders_and_ticket_lifecycle(tmp_path: Path) -> None:
    db = tmp_path / "crm" / "crm.db"
    async with Client(build_crm(db)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"lookup_customer", "list_orders", "create_ticket", "update_ticket"} <= names

        by_email = await client.call_tool("lookup_customer", {"query": "ANA.pereira@example.com"})
        assert [c["id"] for c in by_email.structured_content["customers"]] == ["C-1001"]
        by_phone = await client.call_tool("lookup_customer", {"query": "0049 151 23456789"})
        assert [c["name"] for c in by_phone.structured_content["customers"]] == ["Jonas Becker"]
        nobody = await client.call_tool("lookup_customer", {"query": "zz-nobody"})
        assert nobody.structured_content["customers"] == []

        orders = (
            await client.call_tool("list_orders", {"customer_id": "c-1001"})
        ).structured_content
        assert [o["id"] for o in orders["orders"]] == ["O-5002", "O-5001"]  # newest first
        assert orders["orders"][0]["total"] == 129.0
        shipped = await client.call_tool(
            "list_orders", {"customer_id": "C-1001", "status": "shipped"}
        )
        assert [o["id"] for o in shipped.structured_content["orders"]] == ["O-5002"]

        created = await client.call_tool(
            "create_ticket",
            {
                "customer_id": "C-1001",
                "subject": "Parcel late",
                "description": "Not here yet",
                "order_id": "o-5002",
                "priority": "high",
            },
        )
        ticket = created.structured_content
        assert (
            ticket["status"] == "open"
            and ticket["order_id"] == "O-5002"
            and ticket["priority"] == "high"
        )
        updated = await client.call_tool(
            "update_ticket",
            {"ticket_id": ticket["id"], "status": "resolved", "note": "Carrier found it"},
        )
        assert updated.structured_content["status"] == "resolved"
        assert updated.structured_content["notes"][0].endswith("Carrier found it")

        foreign_order = await client.call_tool(
            "create_ticket",
            {"customer_id": "C-1001", "subject": "x", "description": "y", "order_id": "O-5005"},
        )
        assert foreign_order.is_error and "does not belong" in foreign_order.content[0].text
        missing = await client.call_tool(
            "update_ticket", {"ticket_id": "T-9999", "status": "closed"}
        )
        assert missing.is_error and "No ticket" in missing.content[0].text
        unknown = await client.call_tool("list_orders", {"customer_id": "C-0000"})
        assert unknown.is_error and "lookup_customer" in unknown.content[0].text

    # The data is in the SQLite file at the configured path, and survives a restart.
    with sqlite3.connect(db) as conn:
        assert conn.execute(
            "SELECT status FROM tickets WHERE subject = 'Parcel late'"
        ).fetchone() == ("resolved",)
    async with Client(build_crm(db)) as client:
        again = await client.call_tool("get_ticket", {"ticket_id": ticket["id"]})
        assert again.structured_content["status"] == "resolved"


async def test_crm_without_seed_is_empty(tmp_path: Path) -> None:
    async with Client(build_crm(tmp_path / "empty.db", seed=False)) as client:
        result = await client.call_tool("lookup_customer", {"query": "Ana"})
        assert result.structured_content["customers"] == []


async def test_knowledge_base_search_and_read_demo_articles(tmp_path: Path) -> None:
    async with Client(build_kb(tmp_path / "kb.db")) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"search_articles", "get_article"} <= names
        found = await client.call_tool("search_articles", {"query": "how do I get a refund?"})
        results = found.structured_content["results"]
        assert results[0]["slug"] == "returns-and-refunds"
        assert "**" in results[0]["snippet"]  # matched words are highlighted
        # Punctuation is not an FTS syntax error; stemming finds "repair" for "repaired".
        shipped = await client.call_tool("search_articles", {"query": 'delivery: how many "days"?'})
        assert shipped.structured_content["results"][0]["slug"] == "shipping-times"
        stemmed = await client.call_tool("search_articles", {"query": "repaired"})
        assert [r["slug"] for r in stemmed.structured_content["results"]] == ["warranty"]
        article = await client.call_tool("get_article", {"slug": "warranty"})
        assert article.structured_content["title"] == "Warranty and repairs"
        assert "two-year warranty" in article.structured_content["body"]
        assert "repair" in article.structured_content["tags"]
        missing = await client.call_tool("get_article", {"slug": "nope"})
        assert missing.is_error and "search_articles" in missing.content[0].text


async def test_knowledge_base_loads_a_folder_of_markdown(tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    (folder / "billing").mkdir(parents=True)
    (folder / "opening-hours.md").write_text(
        "# Opening hours\n\nThe shop is open Monday to Saturday, 9 to 18.\n"
    )
    (folder / "billing" / "invoices.md").write_text(
        "---\ntitle: Getting an invoice\ntags: billing, vat\n---\nInvoices with VAT are emailed after shipping.\n"
    )
    async with Client(build_kb(tmp_path / "kb.db", articles_dir=folder)) as client:
        listed = (await client.call_tool("list_articles", {})).structured_content["articles"]
        assert {a["slug"] for a in listed} == {
            "opening-hours",
            "billing-invoices",
        }  # no demo articles
        hit = await client.call_tool("search_articles", {"query": "VAT invoice"})
        assert [r["slug"] for r in hit.structured_content["results"]] == ["billing-invoices"]
        assert hit.structured_content["results"][0]["tags"] == ["billing", "vat"]
        opening = await client.call_tool("get_article", {"slug": "opening-hours"})
        assert opening.structured_content["title"] == "Opening hours"


@pytest.mark.parametrize("module", ["mcp_servers.support_crm", "mcp_servers.knowledge_base"])
async def test_bundled_servers_run_as_processes(tmp_path: Path, module: str) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", module],
        env={
            "SUPPORT_CRM_DB": str(tmp_path / "crm.db"),
            "KNOWLEDGE_BASE_DB": str(tmp_path / "kb.db"),
        },
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        if module.endswith("support_crm"):
            result = await client.call_tool("lookup_customer", {"query": "Omar"})
            assert result.structured_content["customers"][0]["id"] == "C-1004"
            assert tools["create_ticket"].input_schema["properties"]["priority"]["enum"] == [
                "low",
                "normal",
                "high",
                "urgent",
            ]
            assert (tmp_path / "crm.db").exists()
        else:
            result = await client.call_tool("search_articles", {"query": "cancel my order"})
            assert result.structured_content["results"][0]["slug"] == "change-or-cancel-order"
            assert (tmp_path / "kb.db").exists()


async def test_embedded_default_entries_start_and_serve(tmp_path: Path) -> None:
    entries = bundled_plugin_refs(tmp_path / "data")
    refs = [PluginRef.model_validate(entry) for entry in entries]
    assert [ref.id for ref in refs] == ["crm", "kb"]
    manager = McpManager()
    try:
        await manager.start(placed(*refs))
        # start() waits at most startup_wait_s (5 s); on a busy machine a server may still be starting then.
        await eventually(lambda: all(h["healthy"] for h in manager.health().values()), within_s=30)
        crm = {spec.name: spec for spec in await manager.tools_for(refs[0], organisation=ORG)}
        # What each tool may do reaches the gateway (and plugins list, and approvals).
        assert crm["lookup_customer"].annotations == {"readOnlyHint": True}
        assert crm["create_ticket"].annotations == {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False}
        text = await crm["lookup_customer"].invoke({"query": "Mei"}, ctx("crm"))
        assert '"C-1003"' in text
        kb = {spec.name: spec for spec in await manager.tools_for(refs[1], organisation=ORG)}
        with pytest.raises(ToolError, match="No article"):
            await kb["get_article"].invoke({"slug": "missing"}, ctx("kb"))
        assert (tmp_path / "data" / "support_crm.db").exists()
        assert (tmp_path / "data" / "knowledge_base.db").exists()
    finally:
        await manager.aclose()


def test_bundled_entries_default_to_an_absolute_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLUGWAY_DATA_DIR", raising=False)
    crm = bundled_plugin_refs()[0]
    assert crm["mcp"]["env"]["SUPPORT_CRM_DB"] == str(tmp_path / "plugway-data" / "support_crm.db")
    monkeypatch.setenv("PLUGWAY_DATA_DIR", str(tmp_path / "elsewhere"))
    assert bundled_plugin_refs()[1]["mcp"]["env"]["KNOWLEDGE_BASE_DB"] == os.path.join(
        tmp_path, "elsewhere", "knowledge_base.db"
    )
