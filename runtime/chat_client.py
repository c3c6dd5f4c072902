"""``plugway chat``: a terminal chat that streams answers and shows each tool call.

It speaks plain OpenAI streaming, and reads the gateway's SSE comments
(``: plugway tool_call {...}`` / ``: plugway tool_result {...}``), which other
OpenAI clients ignore, to show the tools the gateway runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
from rich.console import Console

TOOL_CALL = "plugway tool_call "
TOOL_RESULT = "plugway tool_result "


def stream_events(client: httpx.Client, body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ("content", text), ("tool_call", info), ("tool_result", info), ("usage", usage), ("error", message)."""
    with client.stream("POST", "/chat/completions", content=orjson.dumps(body)) as response:
        if response.status_code >= 400:
            response.read()
            try:
                message = response.json()["error"]["message"]
            except Exception:
                message = response.text
            yield "error", f"{response.status_code}: {message}"
            return
        for line in response.iter_lines():
            if line.startswith(":"):
                comment = line[1:].strip()
                if comment.startswith(TOOL_CALL):
                    yield "tool_call", orjson.loads(comment[len(TOOL_CALL):])
                elif comment.startswith(TOOL_RESULT):
                    yield "tool_result", orjson.loads(comment[len(TOOL_RESULT):])
                continue
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            chunk = orjson.loads(data)
            if "error" in chunk:
                yield "error", chunk["error"].get("message")
                return
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield "content", text
            if chunk.get("usage"):
                yield "usage", chunk["usage"]


def run_chat(*, base_url: str, key: str, model: str) -> int:
    console = Console()
    console.print(f"[bold]plugway chat[/bold] — model [cyan]{model}[/cyan] at {base_url}. Ctrl-D to quit, /reset to forget.")
    messages: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        while True:
            try:
                text = console.input("[bold green]you ›[/bold green] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return 0
            if not text.strip():
                continue
            if text.strip() == "/reset":
                messages.clear()
                continue
            messages.append({"role": "user", "content": text})
            answer: list[str] = []
            console.print("[bold blue]assistant ›[/bold blue] ", end="")
            for kind, value in stream_events(client, {"model": model, "messages": messages, "stream": True}):
                if kind == "content":
                    answer.append(value)
                    console.print(value, end="", markup=False, highlight=False)
                elif kind == "tool_call":
                    console.print(f"\n  [dim]⚙ {value['name']} …[/dim]")
                elif kind == "tool_result":
                    mark = "[green]✓[/green]" if value.get("ok") else f"[red]✗ {value.get('error', '')}[/red]"
                    console.print(f"  [dim]⚙ {value['name']} {value['duration_ms']:.0f} ms[/dim] {mark}")
                elif kind == "usage":
                    console.print(f"\n  [dim]{value.get('total_tokens')} tokens[/dim]", end="")
                elif kind == "error":
                    console.print(f"\n[red]error: {value}[/red]", end="")
            console.print()
            if answer:
                messages.append({"role": "assistant", "content": "".join(answer)})
