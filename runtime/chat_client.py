"""``plugway chat``: a terminal chat that streams answers and shows each tool call.

It speaks plain OpenAI streaming, and reads the gateway's SSE comments
(``: plugway tool_call {...}`` / ``: plugway tool_result {...}``), which other
OpenAI clients ignore, to show the tools the gateway runs.

A turn that fails (an error from the gateway, a stream cut before
``data: [DONE]``, a dropped connection) is not kept: neither the question nor
the partial answer goes into the conversation, so the model never sees half an
answer as its own and the user can simply ask again. A gateway that cannot be
reached, or that refuses the key, ends the chat with one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.markup import escape

TOOL_CALL = "plugway tool_call "
TOOL_RESULT = "plugway tool_result "


class ChatEnded(Exception):
    """The chat cannot go on (unreachable gateway, refused key); the message is for the user."""


def stream_events(client: httpx.Client, body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ("content", text), ("tool_call", info), ("tool_result", info), ("usage", usage), ("error", message).

    The stream ends with ("done", None) only when the gateway finished the answer.
    Raises :class:`ChatEnded` for a refused key.
    """
    with client.stream("POST", "/chat/completions", content=orjson.dumps(body)) as response:
        if response.status_code >= 400:
            response.read()
            try:
                message = response.json()["error"]["message"]
            except Exception:
                message = response.text
            if response.status_code == 401:
                raise ChatEnded(f"{_where(client)}: the key was refused (401: {message})")
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
                yield "done", None
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
    yield "error", "the answer was cut off before it finished"


def _one_turn(console: Console, client: httpx.Client, body: dict[str, Any]) -> str | None:
    """Stream one answer to the terminal; returns it, or None when the turn failed."""
    answer: list[str] = []
    finished = False
    console.print("[bold blue]assistant ›[/bold blue] ", end="")
    try:
        for kind, value in stream_events(client, body):
            if kind == "content":
                answer.append(value)
                console.print(value, end="", markup=False, highlight=False)
            elif kind == "tool_call":
                console.print(f"\n  [dim]⚙ {value['name']} …[/dim]")
            elif kind == "tool_result":
                mark = "[green]✓[/green]" if value.get("ok") else f"[red]✗ {escape(str(value.get('error', '')))}[/red]"
                console.print(f"  [dim]⚙ {value['name']} {value['duration_ms']:.0f} ms[/dim] {mark}")
            elif kind == "usage":
                console.print(f"\n  [dim]{value.get('total_tokens')} tokens[/dim]", end="")
            elif kind == "error":
                console.print(f"\n[red]error: {escape(str(value))}[/red]", end="", highlight=False)
            elif kind == "done":
                finished = True
    except httpx.ConnectError as exc:
        raise ChatEnded(_unreachable(client, exc)) from None
    except httpx.TransportError as exc:
        console.print(f"\n[red]error: the connection failed midway ({type(exc).__name__})[/red]", end="")
    console.print()
    if not finished:
        console.print("[dim](this turn was not kept in the conversation; ask again)[/dim]")
        return None
    return "".join(answer)


def _unreachable(client: httpx.Client, exc: Exception) -> str:
    cause = str(exc).lower()
    why = "connection refused" if "refused" in cause else (str(exc) or type(exc).__name__)
    return f"cannot reach {_where(client)}: {why}"


def _where(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def _check_gateway(client: httpx.Client) -> None:
    """Fail at once, before the first question, when the gateway is unreachable or refuses the key."""
    try:
        response = client.get("/models")
    except httpx.ConnectError as exc:
        raise ChatEnded(_unreachable(client, exc)) from None
    except httpx.HTTPError:
        return  # the first question will say what is wrong
    if response.status_code == 401:
        try:
            message = response.json()["error"]["message"]
        except Exception:
            message = response.text
        raise ChatEnded(f"{_where(client)}: the key was refused (401: {message})")


def run_chat(*, base_url: str, key: str, model: str) -> int:
    console = Console()
    messages: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx.Timeout(300, connect=10)
    with httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout) as client:
        try:
            _check_gateway(client)
            console.print(f"[bold]plugway chat[/bold] — model [cyan]{model}[/cyan] at {base_url}. Ctrl-D to quit, /reset to forget.")
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
                turn = [*messages, {"role": "user", "content": text}]
                answer = _one_turn(console, client, {"model": model, "messages": turn, "stream": True})
                if answer is not None:
                    messages = [*turn, {"role": "assistant", "content": answer}]
        except ChatEnded as ended:
            console.print()
            print(f"plugway: {ended}", file=sys.stderr)
            return 1
