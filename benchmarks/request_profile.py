"""Where a non-streamed request's time goes, in one process: cProfile of the gateway's hot path.

The real app (``create_app``, its lifespan run in-process) is driven through
``httpx.ASGITransport`` against a local upstream that answers a fixed chat
completion at once (a subprocess, so its work is not in the profile). The
embedded default (SQLite, in-process limits, a key without limits) or, with
``--full``, a Redis limiter (its own ``redis-server`` on a free port) and a key
with RPM and daily-token limits.

    .venv/bin/python benchmarks/request_profile.py [--door chat|responses|messages] [--full] [-n 3000] [--profile]

Under load, wall-clock figures drift; ``calls/request`` (with ``--profile``) does
not. For a count of CPU work that does not depend on the load, run it under
valgrind twice with different ``-n`` and divide the difference of the
instruction counts by the difference of the requests (start-up cancels out);
``--redis-timeout 30`` keeps the limiter from failing closed under valgrind:

    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python benchmarks/request_profile.py -n 50
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python benchmarks/request_profile.py -n 550
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1763900000,
    "model": "gpt-bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how are you?"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21},
}

REQUESTS = {
    "chat": ("/v1/chat/completions", {"model": "gpt-bench", "messages": [{"role": "user", "content": "Say hello in five words."}]}),
    "responses": ("/v1/responses", {"model": "gpt-bench", "input": "Say hello in five words."}),
    "messages": (
        "/v1/messages",
        {"model": "gpt-bench", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello in five words."}]},
    ),
}

# An HTTP/1.1 keep-alive server answering every request with the same completion.
UPSTREAM = """
import asyncio, sys
BODY = sys.argv[2].encode()
ANSWER = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n" % len(BODY) + BODY
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def drive(client: httpx.AsyncClient, path: str, body: dict, requests: int, concurrency: int) -> None:
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            response = await client.post(path, json=body)
            if response.status_code != 200:
                raise SystemExit(f"{response.status_code}: {response.text}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(args: argparse.Namespace, upstream_port: int, redis_url: str | None) -> None:
    from runtime.api.app import create_app
    from runtime.config import settings_from_dict
    from runtime.storage.keys import mint_key

    directory = Path(tempfile.mkdtemp(prefix="plugway-profile-"))
    raw: dict = {
        "database_url": f"sqlite:///{directory / 'plugway.db'}",
        "providers": [{"id": "fixed", "kind": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "sk-bench", "max_retries": 0}],
        "models": [{"id": "gpt-bench", "provider": "fixed", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}],
        "organisations": [{"id": "bench"}],
    }
    if redis_url is not None:
        raw["redis_url"] = redis_url
        raw["limits"] = {"redis_timeout_s": args.redis_timeout}
    app = create_app(settings_from_dict(raw))
    async with app.router.lifespan_context(app):
        limits = {"rpm": 100_000_000, "daily_tokens": 1_000_000_000_000} if redis_url is not None else {}
        key, _ = mint_key(app.state.gateway.engine, organisation_id="bench", **limits)
        path, body = REQUESTS[args.door]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plugway", headers={"authorization": f"Bearer {key}"}) as client:
            await drive(client, path, body, args.warm_up, args.concurrency)
            profile = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            if profile is not None:
                profile.enable()
            await drive(client, path, body, args.n, args.concurrency)
            if profile is not None:
                profile.disable()
            elapsed = time.perf_counter() - started
    limiter = "Redis limits" if redis_url is not None else "embedded"
    print(f"{args.door}, {limiter}: {args.n} requests in {elapsed:.2f} s, {elapsed / args.n * 1e6:.0f} µs a request (client included)")
    if profile is not None:
        stats = pstats.Stats(profile)
        print(f"calls/request: {stats.total_calls / args.n:.0f}")  # type: ignore[attr-defined]
        if args.dump:
            stats.dump_stats(args.dump)
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(args.sort).print_stats(args.only, args.top)
        print(out.getvalue().replace(os.getcwd() + "/", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--door", choices=sorted(REQUESTS), default="chat")
    parser.add_argument("--full", action="store_true", help="a Redis limiter and a key with RPM and daily-token limits")
    parser.add_argument("-n", type=int, default=3000, help="requests measured")
    parser.add_argument("--warm-up", type=int, default=300, help="requests before measuring")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="cProfile the measured requests")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--only", default="runtime/", help="pstats restriction: a regular expression on the file:line(function)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--dump", help="also write the profile here (for pstats or snakeviz)")
    parser.add_argument("--redis-timeout", type=float, default=0.25, help="limits.redis_timeout_s (raise it under valgrind)")
    args = parser.parse_args()

    upstream_port = free_port()
    processes = [subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port), json.dumps(COMPLETION)])]
    redis_url = None
    try:
        if args.full:
            redis_port = free_port()
            processes.append(
                subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
            )
            wait_for_port(redis_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        wait_for_port(upstream_port)
        asyncio.run(measure(args, upstream_port, redis_url))
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
