"""Code mode against classic tool calling: the same multi-step tasks, played by a scripted model.

The gateway runs for real (uvicorn in a thread, the real loop, the real tools, the
Monty sandbox); the upstream is a local OpenAI-format server whose "model" follows
a fixed plan per task and mode, and reports usage as the gateway's demo model
estimates it (about four characters of the request a prompt token), so both modes
are priced by one rule. Catalogues of 16, 150 and 500 tools: the bundled clock and
calculator plugins, a small CRM plugin the tasks need, and generated tools.

Three configurations per catalogue:
- ``classic``: today's default: all tools in the prompt, or the tool search when
  the catalogue is over the provider's tool limit or the tool-prompt budget;
- ``classic-full``: every tool definition in every prompt (the tool search off),
  the baseline Bifrost's published "92.8 % fewer input tokens" is measured against;
- ``code``: ``orchestration.mode: code``.

    python benchmarks/code_mode.py            # prints the Markdown tables of the README
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import hookimpl  # noqa: E402
from runtime.json_types import JSON  # noqa: E402
from runtime.plugin_host.manager import load_plugins  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, Reply  # noqa: E402
from tests.support import GatewayServer, make_settings  # noqa: E402

SIZES = (16, 150, 500)
CONFIGS = ("classic", "classic-full", "code")
BUNDLED = 4 + 1  # clock's four tools and the calculator
CRM_TOOLS = 3

# -- the tools -------------------------------------------------------------------------------------

CUSTOMERS = {"ada@example.com": "C-100"}
ORDERS = {"C-100": [{"id": "O-1", "total": 30.0}, {"id": "O-2", "total": 12.5}, {"id": "O-3", "total": 7.25}]}


def find_customer(email: str) -> dict[str, str]:
    """Find a customer of the shop by their email address. Returns the customer's id and name."""
    return {"customer_id": CUSTOMERS.get(email, "C-0"), "name": "Ada Lovelace", "email": email}


def list_orders(customer_id: str, status: str = "any") -> list[dict[str, object]]:
    """List a customer's orders with each order's id and total, newest first."""
    return list(ORDERS.get(customer_id, []))


def order_total(order_ids: list[str], currency: str = "EUR") -> dict[str, object]:
    """Sum the totals of some orders, in a currency."""
    totals = {str(o["id"]): float(o["total"]) for orders in ORDERS.values() for o in orders}  # type: ignore[arg-type]
    return {"total": sum(totals.get(i, 0.0) for i in order_ids), "currency": currency, "orders": len(order_ids)}


class CrmPlugin:
    @hookimpl
    def register_tools(self, register: Callable[..., None]) -> None:
        for tool in (find_customer, list_orders, order_total):
            register(tool)


SUBJECTS = ["invoice", "ticket", "shipment", "product", "stock", "review", "coupon", "warehouse", "campaign", "lead",
            "contract", "asset", "supplier", "employee", "payslip", "budget", "meeting", "document", "webhook", "report"]
VERBS = ["get", "list", "create", "update", "delete", "archive", "export", "count", "search", "restore",
         "merge", "tag", "assign", "close", "reopen", "approve", "reject", "sync", "audit", "duplicate",
         "lock", "unlock", "share", "rename", "schedule"]


def _generated_tool(verb: str, subject: str) -> Callable[..., Any]:
    """A back-office tool with a realistic signature: an id, a reason, a dry-run flag, the fields to return."""
    name = f"{verb}_{subject}"

    async def tool(**arguments: Any) -> JSON:
        return {"tool": name, **arguments}

    parameters = [
        (f"{subject}_id", str, inspect.Parameter.empty, f"The {subject}'s identifier, as shown in the back office."),
        ("reason", str, "", "Why, for the audit log."),
        ("dry_run", bool, False, "Check without changing anything."),
        ("fields", list[str], None, "Which fields to return (all when left out)."),
    ]
    tool.__name__ = name
    tool.__doc__ = (
        f"{verb.capitalize()} {subject} records in the back office. Use it when a user asks to {verb} a {subject}; "
        f"it works on one {subject} at a time and returns the {subject} as stored."
    )
    tool.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=Annotated[kind, Field(description=text)])
            for p, kind, default, text in parameters
        ]
    )
    tool.__annotations__ = {p: Annotated[kind, Field(description=text)] for p, kind, default, text in parameters}
    return tool


class GeneratedPlugin:
    """``count`` generated back-office tools."""

    def __init__(self, count: int) -> None:
        self.tools = [_generated_tool(verb, subject) for verb in VERBS for subject in SUBJECTS][:count]

    @hookimpl
    def register_tools(self, register: Callable[..., None]) -> None:
        for tool in self.tools:
            register(tool)


# -- the tasks -------------------------------------------------------------------------------------


@dataclass
class Task:
    name: str
    question: str
    query: str  # what the model searches for, when it must
    # Classic: the steps in order, each a list of calls (tool, arguments from the results so far).
    steps: list[list[tuple[str, Callable[[JSON], JSON]]]]
    script: str
    answer: str


TASKS = [
    Task(
        "three dependent steps",
        "How much has ada@example.com spent with us?",
        "find customer email list orders order total",
        [
            [("crm__find_customer", lambda r: {"email": "ada@example.com"})],
            [("crm__list_orders", lambda r: {"customer_id": r["crm__find_customer"]["customer_id"]})],
            [("crm__order_total", lambda r: {"order_ids": [o["id"] for o in r["crm__list_orders"]]})],
        ],
        "customer = await crm__find_customer(email='ada@example.com')\n"
        "orders = await crm__list_orders(customer_id=customer['customer_id'])\n"
        "await crm__order_total(order_ids=[o['id'] for o in orders])\n",
        "Ada has spent 49.75 EUR over 3 orders.",
    ),
    Task(
        "four independent calls",
        "What time is it in Tokyo, Paris and New York, and what is 1234 * 5678?",
        "now current time timezone evaluate arithmetic expression",
        [
            [
                ("clock__now", lambda r: {"timezone": "Asia/Tokyo"}),
                ("clock__now", lambda r: {"timezone": "Europe/Paris"}),
                ("clock__now", lambda r: {"timezone": "America/New_York"}),
                ("calculator__evaluate", lambda r: {"expression": "1234 * 5678"}),
            ]
        ],
        "import asyncio\n"
        "zones = ['Asia/Tokyo', 'Europe/Paris', 'America/New_York']\n"
        "times = await asyncio.gather(*[clock__now(timezone=z) for z in zones])\n"
        "product = await calculator__evaluate(expression='1234 * 5678')\n"
        "for t in times:\n"
        "    print(t['timezone'], t['datetime'][11:16])\n"
        "product['result']\n",
        "Tokyo, Paris and New York times as listed; 1234 * 5678 = 7006652.",
    ),
    Task(
        "two dependent steps",
        "How many days from 2026-01-15 to 2026-12-25, in weeks?",
        "days between dates evaluate arithmetic expression",
        [
            [("clock__days_between", lambda r: {"start_date": "2026-01-15", "end_date": "2026-12-25"})],
            [("calculator__evaluate", lambda r: {"expression": f"{r['clock__days_between']['days']} / 7"})],
        ],
        "days = await clock__days_between(start_date='2026-01-15', end_date='2026-12-25')\n"
        "weeks = await calculator__evaluate(expression=f\"{days['days']} / 7\")\n"
        "{'days': days['days'], 'weeks': weeks['result']}\n",
        "344 days, about 49.1 weeks.",
    ),
]


def estimate(value: Any) -> int:
    """Tokens at about four characters each, as the demo model counts them."""
    return max(1, len(orjson.dumps(value)) // 4)


class ScriptedModel:
    """Plays each task's plan in whichever mode the request shows (by the tools it offers)."""

    def __call__(self, body: JSON) -> Reply:
        messages: list[JSON] = body["messages"]
        task = next(t for t in TASKS if t.question == messages[0]["content"])
        offered = {t["function"]["name"]: t["function"] for t in body.get("tools") or ()}
        calls: list[tuple[str, Any]] = []
        text: str | None = None
        called = [c["function"]["name"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
        if "plugway__run_script" in offered:
            must_search = "plugway__find_tools first" in offered["plugway__run_script"]["description"]
            if must_search and "plugway__find_tools" not in called:
                calls = [("plugway__find_tools", {"query": task.query})]
            elif "plugway__run_script" not in called:
                calls = [("plugway__run_script", {"code": task.script})]
            else:
                text = task.answer
        else:
            results = _results(messages)
            done = sum(1 for m in messages if m["role"] == "assistant" and any(c["function"]["name"] != "plugway__find_tools" for c in m.get("tool_calls") or ()))
            if done < len(task.steps):
                step = task.steps[done]
                if any(name not in offered for name, _ in step) and "plugway__find_tools" in offered:
                    calls = [("plugway__find_tools", {"query": task.query})]
                else:
                    calls = [(name, arguments(results)) for name, arguments in step]
            else:
                text = task.answer
        completion = estimate(text) if text else sum(estimate(a) + 4 for _, a in calls)
        return Reply(text=text, tool_calls=calls, prompt_tokens=estimate(messages) + estimate(body.get("tools") or []), completion_tokens=completion)


def _results(messages: list[JSON]) -> JSON:
    names = {c["id"]: c["function"]["name"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or ()}
    results: JSON = {}
    for message in messages:
        if message["role"] == "tool":
            try:
                results[names[message["tool_call_id"]]] = orjson.loads(message["content"])
            except orjson.JSONDecodeError:
                pass
    return results


# -- running ---------------------------------------------------------------------------------------


@dataclass
class Measured:
    rounds: int = 0
    prompt: int = 0
    completion: int = 0
    wall_ms: float = 0.0
    answers: list[str] = field(default_factory=list)

    def add(self, other: Measured) -> None:
        self.rounds += other.rounds
        self.prompt += other.prompt
        self.completion += other.completion
        self.wall_ms += other.wall_ms


def measure(size: int, config: str, repeats: int) -> dict[str, Measured]:
    import openai

    upstream = FakeOpenAI().start()
    upstream.responder = ScriptedModel()
    plugins = load_plugins(extra={"crm": CrmPlugin(), "generated": GeneratedPlugin(size - BUNDLED - CRM_TOOLS)})
    orchestration: JSON = {"max_tool_rounds": 8, "tool_timeout_s": 10, "mode": "code" if config == "code" else "classic"}
    provider: JSON = {"id": "upstream", "kind": "openai", "base_url": upstream.base_url, "api_key": "sk-test-upstream", "timeout_s": 10, "max_retries": 0}
    if config == "classic-full":
        orchestration["tool_prompt_budget_tokens"] = None
        provider["max_tools"] = 1000
    with tempfile.TemporaryDirectory() as directory:
        settings = make_settings(
            Path(directory),
            upstream.base_url,
            providers=[provider],
            organisations=[{"id": "acme", "plugins": [{"id": "clock"}, {"id": "calculator"}, {"id": "crm"}, {"id": "generated"}]}],
            orchestration=orchestration,
        )
        server = GatewayServer(settings, plugins=plugins).start()
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0, timeout=60)
            client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": TASKS[0].question}])  # warm up
            measured: dict[str, Measured] = {}
            for task in TASKS:
                total = Measured()
                for _ in range(repeats):
                    started = time.perf_counter()
                    answer = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": task.question}])
                    wall = (time.perf_counter() - started) * 1000
                    usage = answer.usage
                    assert usage is not None
                    trace = answer.model_extra["plugway"]  # type: ignore[index]
                    total.add(Measured(trace["rounds"], usage.prompt_tokens, usage.completion_tokens, wall))
                    total.answers.append(answer.choices[0].message.content or "")
                assert all(a == task.answer for a in total.answers), (config, size, task.name, total.answers)
                measured[task.name] = Measured(total.rounds // repeats, total.prompt // repeats, total.completion // repeats, total.wall_ms / repeats)
            return measured
        finally:
            server.stop()
            upstream.stop()


def ratio(code: float, classic: float) -> str:
    return f"{code / classic:.2f}" if classic else "-"


def report(results: dict[tuple[int, str], dict[str, Measured]]) -> str:
    lines = [
        "| tools | task | rounds classic → code | prompt tokens classic → code (ratio) | completion tokens classic → code (ratio) | wall ms classic → code (ratio) |",
        "| ---: | --- | --- | --- | --- | --- |",
    ]
    for size in SIZES:
        classic, code = results[(size, "classic")], results[(size, "code")]
        total_classic, total_code = Measured(), Measured()
        for task in TASKS:
            a, b = classic[task.name], code[task.name]
            total_classic.add(a)
            total_code.add(b)
            lines.append(
                f"| {size} | {task.name} | {a.rounds} → {b.rounds} | {a.prompt} → {b.prompt} ({ratio(b.prompt, a.prompt)}) | "
                f"{a.completion} → {b.completion} ({ratio(b.completion, a.completion)}) | {a.wall_ms:.0f} → {b.wall_ms:.0f} ({ratio(b.wall_ms, a.wall_ms)}) |"
            )
        a, b = total_classic, total_code
        lines.append(
            f"| {size} | **total** | {a.rounds} → {b.rounds} | {a.prompt} → {b.prompt} ({ratio(b.prompt, a.prompt)}) | "
            f"{a.completion} → {b.completion} ({ratio(b.completion, a.completion)}) | {a.wall_ms:.0f} → {b.wall_ms:.0f} ({ratio(b.wall_ms, a.wall_ms)}) |"
        )
    lines += ["", "| tools | prompt tokens, all tasks: classic-full → classic → code | code vs classic-full | code vs classic |", "| ---: | --- | --- | --- |"]
    for size in SIZES:
        full, tool_search, scripted = (sum(m.prompt for m in results[(size, c)].values()) for c in ("classic-full", "classic", "code"))
        lines.append(
            f"| {size} | {full} → {tool_search} → {scripted} | {100 * (1 - scripted / full):.1f} % fewer | {100 * (1 - scripted / tool_search):.1f} % fewer |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each task (wall time is their mean)")
    args = parser.parse_args()
    results = {(size, config): measure(size, config, args.repeats) for size in SIZES for config in CONFIGS}
    print(report(results))


if __name__ == "__main__":
    main()
