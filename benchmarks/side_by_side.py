"""plugway side by side with a bare Python proxy, in one sitting: ``make bench``.

The way gateway benchmarks are usually run: nginx (Debian's package) as a
static upstream that answers instantly (a fixed chat completion, a fixed
stream, and a slow stream trickled by ``limit_rate``), ``wrk`` as the client,
each server alone on the machine, one at a time, ratios taken in the same run:

    upstream direct     wrk -> nginx
    bare proxy          wrk -> Starlette + aiohttp -> nginx   (the floor)
    plugway embedded    SQLite, in-process limits, a key without limits
    plugway full path   PostgreSQL + Redis, a key with RPM and daily-token limits
    Responses/Messages  the other front doors, embedded, to the same upstream
    --workers 2         the embedded default on two worker processes

then streaming (time to first byte against the bare proxy streaming; 1,000
concurrent slow streams with the process's RSS and a non-streamed request's
latency meanwhile) and the CPU one orchestrated round with an in-process tool
costs above a passthrough request. ``--peer litellm`` installs LiteLLM into
its own virtualenv and measures it too. nginx and wrk are installed with
apt-get when missing (as root).

    .venv/bin/python benchmarks/side_by_side.py [--duration 6] [--rounds 3] [--peer litellm] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POSTGRES_ADMIN_URL = os.environ.get("PLUGWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("PLUGWAY_BENCH_REDIS", "redis://127.0.0.1:6379/14")
# Its own names let two sittings on one machine (say, two engineers) run without dropping each other's database.
BENCH_DATABASE = os.environ.get("PLUGWAY_BENCH_DATABASE", "plugway_bench")

CHAT_REQUEST = {"model": "gpt-bench", "messages": [{"role": "user", "content": "Say hello in five words."}]}
RESPONSES_REQUEST = {"model": "gpt-bench", "input": "Say hello in five words."}
MESSAGES_REQUEST = {"model": "gpt-bench", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello in five words."}]}

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1763900000,
    "model": "gpt-bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how are you?"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21},
}


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1763900000, "model": "gpt-bench", "choices": choices}
    if usage:
        body["usage"] = usage
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"


def sse_body(words: list[str]) -> str:
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": word}) for word in words]
    events.append(_chunk({}, finish="stop"))
    events.append(_chunk({}, usage={"prompt_tokens": 14, "completion_tokens": len(words), "total_tokens": 14 + len(words)}))
    return "".join(events) + "data: [DONE]\n\n"


STREAM = sse_body(["Hello", " there,", " how", " are", " you?"])
SLOW_STREAM = sse_body([f" w{i}" for i in range(12)])  # nginx takes strings up to 4 KB


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_debian_tools() -> None:
    missing = [name for name in ("nginx", "wrk") if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"the benchmark needs {' and '.join(missing)}: apt-get install {' '.join(missing)} (as root)")
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, stdout=subprocess.DEVNULL)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _nginx_string(text: str) -> str:
    assert "$" not in text and "'" not in text
    return "'" + text.replace("\\", "\\\\").replace("\n", "\\n") + "'"


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


@dataclass
class Upstream:
    """nginx on three ports: a fixed completion, a fixed stream, a slow stream."""

    fixed: int
    stream: int
    slow: int
    process: subprocess.Popen


@contextmanager
def nginx(workdir: Path) -> Iterator[Upstream]:
    fixed, stream, slow = free_port(), free_port(), free_port()
    conf = workdir / "nginx.conf"
    temp = workdir / "nginx-temp"
    temp.mkdir(exist_ok=True)
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_buffer_size 64k;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{fixed};
        location / {{ default_type application/json; return 200 {_nginx_string(json.dumps(COMPLETION, separators=(",", ":")))}; }}
    }}
    server {{
        listen 127.0.0.1:{stream};
        location / {{ default_type text/event-stream; return 200 {_nginx_string(STREAM)}; }}
    }}
    server {{
        listen 127.0.0.1:{slow};
        location / {{ default_type text/event-stream; limit_rate 128; return 200 {_nginx_string(SLOW_STREAM)}; }}
    }}
}}
"""
    )
    process = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=raise_open_files)
    try:
        wait_http(f"http://127.0.0.1:{fixed}/v1/chat/completions", method="POST", process=process)
        yield Upstream(fixed, stream, slow, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_http(url: str, *, method: str = "GET", timeout: float = 60, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        try:
            httpx.request(method, url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    key: str = ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def pids(self) -> list[int]:
        """The server process and its children (uvicorn's workers)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        found = [self.process.pid]
        if children.exists():
            for pid in children.read_text().split():
                found.append(int(pid))
        return found


@contextmanager
def running(name: str, argv: list[str], port: int, *, ready_path: str, cwd: Path, env: dict[str, str] | None = None, key: str = "") -> Iterator[Server]:
    process = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_open_files, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}", process=process, method="GET")
        time.sleep(0.5)
        yield Server(name, port, process, key)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited by itself
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---------------------------------------------------------------- plugway set-up


def plugway_config(
    workdir: Path, upstream: Upstream, *, full: bool, tool_upstream: int | None = None, database_name: str = BENCH_DATABASE
) -> Path:
    name = ("full" if database_name == BENCH_DATABASE else database_name) if full else "embedded"
    database = f"postgresql://postgres@127.0.0.1:5432/{database_name}" if full else f"sqlite:///{workdir}/{name}.db"
    redis = f"redis_url: {REDIS_URL}\n" if full else ""
    tool_lines = ""
    if tool_upstream is not None:
        tool_lines = f"""  - {{id: tools-up, kind: openai, base_url: "http://127.0.0.1:{tool_upstream}/v1", api_key: sk-test-upstream, max_retries: 0}}
"""
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"""
database_url: {database}
{redis}providers:
  - {{id: fixed, kind: openai, base_url: "http://127.0.0.1:{upstream.fixed}/v1", api_key: sk-bench, max_retries: 0}}
  - {{id: stream, kind: openai, base_url: "http://127.0.0.1:{upstream.stream}/v1", api_key: sk-bench, max_retries: 0}}
  - {{id: slow, kind: openai, base_url: "http://127.0.0.1:{upstream.slow}/v1", api_key: sk-bench, max_retries: 0}}
{tool_lines}models:
  - {{id: gpt-bench, provider: fixed}}
  - {{id: gpt-bench-stream, provider: stream}}
  - {{id: gpt-bench-slow, provider: slow}}
{"  - {id: gpt-bench-tools, provider: tools-up}" if tool_upstream is not None else ""}
organisations:
  - {{id: bench}}
  - {{id: tools, plugins: [{{id: clock}}]}}
"""
    )
    return config


def fresh_postgres_and_redis(*databases: str) -> None:
    import psycopg
    import redis

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        for database in databases or (BENCH_DATABASE,):
            connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {database}")
    redis.Redis.from_url(REDIS_URL).flushdb()


def create_key(config: Path, org: str, *limits: str, code: Path = ROOT) -> str:
    # `python -m` puts the working directory first on sys.path: it picks which plugway runs.
    out = subprocess.run([PYTHON, "-m", "runtime.cli", "keys", "create", "--org", org, "--config", str(config), *limits], capture_output=True, text=True, cwd=code, check=True)
    return out.stdout.strip().splitlines()[-1]


def plugway(name: str, config: Path, workdir: Path, key: str, *, workers: int = 1, code: Path | None = None) -> contextmanager:
    port = free_port()
    argv = [PYTHON, "-m", "runtime.cli", "serve", "--config", str(config), "--port", str(port), "--no-worker"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    env = {"PYTHONPATH": str(code)} if code is not None else None
    return running(name, argv, port, ready_path="/healthz", cwd=workdir, env=env, key=key)


def bare_proxy(upstream_port: int, workdir: Path) -> contextmanager:
    port = free_port()
    argv = [PYTHON, str(ROOT / "benchmarks" / "bare_proxy.py"), "--upstream", f"http://127.0.0.1:{upstream_port}", "--port", str(port)]
    return running("bare proxy", argv, port, ready_path="/", cwd=workdir)


# ---------------------------------------------------------------- measuring


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no {percentile}% latency:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, body: dict, *, key: str, connections: int, duration: int, workdir: Path) -> WrkResult:
    script = workdir / "request.lua"
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    lua_headers = "\n".join(f'wrk.headers["{name}"] = [==[{value}]==]' for name, value in headers.items())
    script.write_text(f'wrk.method = "POST"\nwrk.body = [==[{json.dumps(body)}]==]\n{lua_headers}\n')
    threads = 1
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    subprocess.run([*command[:3], "-d2s", *command[4:]], capture_output=True, check=True)  # warm-up
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rate:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(group) for group in socket_errors.groups())
    return WrkResult(float(rate.group(1)), _latency(out, "50"), _latency(out, "99"), errors)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def time_to_first_byte(url: str, body: dict, key: str, samples: int) -> float:
    """Median milliseconds from sending a streamed request to its first SSE bytes, one connection."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timings = []
    with httpx.Client(timeout=30) as client:
        for index in range(samples + 20):
            started = time.perf_counter()
            with client.stream("POST", url, json=body, headers=headers) as response:
                response.raise_for_status()
                iterator = response.iter_raw()
                next(iterator)
                first = time.perf_counter() - started
                for _ in iterator:
                    pass
            if index >= 20:  # the first ones warm up
                timings.append(first * 1000)
    return statistics.median(timings)


async def _slow_stream(port: int, payload: bytes, opened: asyncio.Event, counter: list[int], total: int, first_bytes: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        seen_body = False
        while chunk := await reader.read(65536):
            if not seen_body and b"data:" in chunk:
                seen_body = True
                first_bytes[0] += 1
                if first_bytes[0] == total:
                    opened.set()
    finally:
        counter[0] += 1
        writer.close()


@dataclass
class SlowStreams:
    streams: int
    streams_receiving: int
    rss_idle_mb: float
    rss_mb: float
    other_request_p50_ms: float | None  # None: not measured (the bare proxy)
    other_request_max_ms: float | None


async def _slow_streams(server: Server, streams: int, *, probe: bool) -> SlowStreams:
    body = json.dumps({"model": "gpt-bench-slow", "stream": True, "messages": CHAT_REQUEST["messages"]}).encode()
    headers = f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    if server.key:
        headers += f"Authorization: Bearer {server.key}\r\n"
    payload = headers.encode() + b"\r\n" + body
    idle = rss_mb(server.pids())
    opened = asyncio.Event()
    done, first = [0], [0]
    tasks = []
    for _ in range(streams):
        tasks.append(asyncio.create_task(_slow_stream(server.port, payload, opened, done, streams, first)))
        await asyncio.sleep(0.002)
    try:
        await asyncio.wait_for(opened.wait(), timeout=60)
    except TimeoutError:
        pass
    receiving = first[0]
    rss = rss_mb(server.pids())
    timings = []
    auth = {"Authorization": f"Bearer {server.key}"} if server.key else {}
    async with httpx.AsyncClient(timeout=30) as client:
        # The bare proxy has one upstream (the slow one here), so it has nothing fast to ask.
        for _ in range(20 if probe else 0):
            started = time.perf_counter()
            response = await client.post(server.url("/v1/chat/completions"), json=CHAT_REQUEST, headers=auth)
            response.raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    rss = max(rss, rss_mb(server.pids()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return SlowStreams(streams, receiving, idle, rss, statistics.median(timings) if timings else None, max(timings) if timings else None)


def slow_streams(server: Server, streams: int, *, probe: bool = True) -> SlowStreams:
    raise_open_files()
    return asyncio.run(_slow_streams(server, streams, probe=probe))


def cpu_per_request(server: Server, body: dict, key: str, requests: int, workdir: Path) -> float:
    """Microseconds of the server's CPU per request, over `requests` sent on 4 connections."""
    headers = {"Authorization": f"Bearer {key}"}

    async def drive() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            queue = iter(range(requests))

            async def worker() -> None:
                for _ in queue:
                    (await client.post(server.url("/v1/chat/completions"), json=body, headers=headers)).raise_for_status()

            await asyncio.gather(*(worker() for _ in range(4)))

    asyncio.run(drive())  # warm-up
    before = cpu_seconds(server.pids())
    asyncio.run(drive())
    return (cpu_seconds(server.pids()) - before) / requests * 1e6


# ---------------------------------------------------------------- the run


@dataclass
class Report:
    date: str
    machine: str
    duration_s: float
    rows: dict[str, dict] = field(default_factory=dict)
    streaming: dict[str, float] = field(default_factory=dict)
    slow_streams: dict[str, dict] = field(default_factory=dict)
    orchestration_cpu_us: dict[str, float] = field(default_factory=dict)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def measure_pair(report: Report, label: str, url: str, body: dict, key: str, args: argparse.Namespace, workdir: Path) -> dict:
    loaded = wrk(url, body, key=key, connections=32, duration=args.duration, workdir=workdir)
    single = wrk(url, body, key=key, connections=1, duration=max(3, args.duration // 2), workdir=workdir)
    row = {"rps_32": loaded.requests_per_s, "p50_32_ms": loaded.p50_ms, "p99_32_ms": loaded.p99_ms, "p50_1_ms": single.p50_ms, "errors": loaded.errors + single.errors}
    print(f"  {label:<44}{loaded.requests_per_s:>9.0f} req/s  p50@1 {single.p50_ms:6.2f} ms  p99@32 {loaded.p99_ms:6.2f} ms" + (f"  ERRORS {row['errors']}" if row["errors"] else ""), flush=True)
    return row


def litellm_peer(workdir: Path, upstream: Upstream) -> contextmanager:
    venv = ROOT / "benchmarks" / ".peers" / "litellm"
    litellm = venv / "bin" / "litellm"
    if not litellm.exists():
        print("installing LiteLLM into benchmarks/.peers/litellm ...", flush=True)
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True)
    config = workdir / "litellm.yaml"
    # LiteLLM refuses to start without a master key (and then asks for it on every request).
    master_key = "sk-litellm-bench-" + secrets.token_hex(16)
    config.write_text(
        f"""
general_settings:
  master_key: {master_key}
model_list:
  - model_name: gpt-bench
    litellm_params: {{model: openai/gpt-bench, api_base: "http://127.0.0.1:{upstream.fixed}/v1", api_key: sk-bench}}
"""
    )
    port = free_port()
    argv = [str(litellm), "--config", str(config), "--port", str(port), "--num_workers", "1"]
    return running("litellm", argv, port, ready_path="/health/liveliness", cwd=workdir, key=master_key)


def run(args: argparse.Namespace) -> Report:
    ensure_debian_tools()
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="plugway-bench-"))
    report = Report(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), machine(), args.duration)
    print(f"{report.date} on {report.machine}", flush=True)
    with nginx(workdir) as upstream:
        fixed = f"http://127.0.0.1:{upstream.fixed}/v1/chat/completions"
        print(f"throughput (wrk, 1 thread, 32 connections) and latency (1 connection), median of {args.rounds} rounds:", flush=True)
        embedded = plugway_config(workdir, upstream, full=False)
        embedded_key = create_key(embedded, "bench")
        baseline_database = f"{BENCH_DATABASE}_baseline"
        fresh_postgres_and_redis(BENCH_DATABASE, *((baseline_database,) if args.baseline else ()))
        full = plugway_config(workdir, upstream, full=True)
        full_key = create_key(full, "bench", "--rpm", "100000000", "--daily-tokens", "1000000000000")
        if args.baseline:
            baseline_config = plugway_config(workdir, upstream, full=True, database_name=baseline_database)
            baseline_key = create_key(baseline_config, "bench", "--rpm", "100000000", "--daily-tokens", "1000000000000", code=args.baseline)
        with contextlib.ExitStack() as servers:
            # Every server is up for the whole measurement and they take turns, round after round:
            # a shared machine's speed drifts over minutes, and each ratio must compare like with like.
            bare = servers.enter_context(bare_proxy(upstream.fixed, workdir))
            one = servers.enter_context(plugway("plugway embedded", embedded, workdir, embedded_key))
            full_path = servers.enter_context(plugway("plugway full path", full, workdir, full_key))
            two = servers.enter_context(plugway("plugway embedded, 2 workers", embedded, workdir, embedded_key, workers=2))
            if args.baseline:
                baseline = servers.enter_context(plugway("plugway full path, baseline", baseline_config, workdir, baseline_key, code=args.baseline))
            targets = [
                ("upstream direct (nginx)", fixed, CHAT_REQUEST, ""),
                ("bare proxy (Starlette + aiohttp)", bare.url("/v1/chat/completions"), CHAT_REQUEST, ""),
            ]
            if args.peer == "litellm":
                peer = servers.enter_context(litellm_peer(workdir, upstream))
                targets.append(("LiteLLM proxy, one worker, no database", peer.url("/v1/chat/completions"), CHAT_REQUEST, peer.key))
            targets += [
                ("plugway embedded: chat completions", one.url("/v1/chat/completions"), CHAT_REQUEST, embedded_key),
                ("plugway embedded: Responses", one.url("/v1/responses"), RESPONSES_REQUEST, embedded_key),
                ("plugway embedded: Messages", one.url("/v1/messages"), MESSAGES_REQUEST, embedded_key),
                ("plugway full path (PostgreSQL + Redis limits)", full_path.url("/v1/chat/completions"), CHAT_REQUEST, full_key),
            ]
            if args.baseline:
                targets.append((f"baseline full path ({args.baseline.name})", baseline.url("/v1/chat/completions"), CHAT_REQUEST, baseline_key))
            targets += [
                ("plugway embedded, --workers 2", two.url("/v1/chat/completions"), CHAT_REQUEST, embedded_key),
            ]
            runs: dict[str, list[dict]] = {label: [] for label, *_ in targets}
            for round_no in range(1, args.rounds + 1):
                print(f" round {round_no}", flush=True)
                for label, url, body, key in targets:
                    runs[label].append(measure_pair(report, label, url, body, key, args, workdir))
        for label, rows in runs.items():
            report.rows[label] = {name: statistics.median(row[name] for row in rows) for name in rows[0]}
        print(" medians:", flush=True)
        for label, row in report.rows.items():
            print(f"  {label:<44}{row['rps_32']:>9.0f} req/s  p50@1 {row['p50_1_ms']:6.2f} ms  p99@32 {row['p99_32_ms']:6.2f} ms", flush=True)

        print("streaming:", flush=True)
        stream_request = {"model": "gpt-bench-stream", "stream": True, "messages": CHAT_REQUEST["messages"]}
        with bare_proxy(upstream.stream, workdir) as bare:
            report.streaming["bare_ttfb_ms"] = time_to_first_byte(bare.url("/v1/chat/completions"), stream_request, "", args.samples)
        with plugway("plugway embedded", embedded, workdir, embedded_key) as server:
            report.streaming["plugway_ttfb_ms"] = time_to_first_byte(server.url("/v1/chat/completions"), stream_request, embedded_key, args.samples)
        print(f"  time to first byte, p50: bare {report.streaming['bare_ttfb_ms']:.2f} ms, plugway {report.streaming['plugway_ttfb_ms']:.2f} ms", flush=True)
        with bare_proxy(upstream.slow, workdir) as bare:
            bare_slow = slow_streams(bare, args.streams, probe=False)
        report.slow_streams["bare proxy"] = asdict(bare_slow)
        with plugway("plugway embedded", embedded, workdir, embedded_key) as server:
            slow = slow_streams(server, args.streams)
        report.slow_streams["plugway embedded"] = asdict(slow)
        for name, result in (("bare proxy", bare_slow), ("plugway", slow)):
            meanwhile = "" if result.other_request_max_ms is None else f", a non-streamed request meanwhile p50 {result.other_request_p50_ms:.1f} ms, max {result.other_request_max_ms:.1f} ms"
            print(f"  {name}: {result.streams_receiving}/{result.streams} slow streams open, RSS {result.rss_idle_mb:.0f} -> {result.rss_mb:.0f} MB{meanwhile}", flush=True)

        print("orchestration (gateway CPU per request):", flush=True)
        tool_port = free_port()
        fake = subprocess.Popen([PYTHON, "-m", "tests.fakes.openai_server", "--port", str(tool_port), "--tool", "clock__now", "--arguments", '{"timezone": "Europe/Paris"}'], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{tool_port}/v1/chat/completions", method="POST", process=fake)
            tools_config = plugway_config(workdir, upstream, full=False, tool_upstream=tool_port)
            plain_key, tools_key = create_key(tools_config, "bench"), create_key(tools_config, "tools")
            with plugway("plugway embedded", tools_config, workdir, plain_key) as server:
                body = {**CHAT_REQUEST, "model": "gpt-bench-tools"}
                report.orchestration_cpu_us["passthrough"] = cpu_per_request(server, body, plain_key, args.cpu_requests, workdir)
                report.orchestration_cpu_us["one_round"] = cpu_per_request(server, body, tools_key, args.cpu_requests, workdir)
        finally:
            fake.terminate()
            fake.wait(timeout=10)
        cpu = report.orchestration_cpu_us
        print(f"  passthrough {cpu['passthrough']:.0f} us, one round with clock__now {cpu['one_round']:.0f} us: {cpu['one_round'] - cpu['passthrough']:.0f} us above", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return report


def verdicts(report: Report) -> list[tuple[str, str, bool]]:
    rows = report.rows
    bare = rows["bare proxy (Starlette + aiohttp)"]
    embedded = rows["plugway embedded: chat completions"]
    full = rows["plugway full path (PostgreSQL + Redis limits)"]
    results = [
        ("full path >= 0.50 of the bare proxy's req/s", f"{full['rps_32'] / bare['rps_32']:.2f}", full["rps_32"] / bare["rps_32"] >= 0.5),
        ("full path p50 at 1 connection <= bare + 0.5 ms", f"+{full['p50_1_ms'] - bare['p50_1_ms']:.2f} ms", full["p50_1_ms"] - bare["p50_1_ms"] <= 0.5),
        ("embedded >= 0.70 of the bare proxy's req/s", f"{embedded['rps_32'] / bare['rps_32']:.2f}", embedded["rps_32"] / bare["rps_32"] >= 0.7),
    ]
    ttfb = report.streaming["plugway_ttfb_ms"] - report.streaming["bare_ttfb_ms"]
    results.append(("streaming time to first byte <= bare + 1 ms", f"+{ttfb:.2f} ms", ttfb <= 1.0))
    slow = report.slow_streams["plugway embedded"]
    results.append(("1,000 slow streams: all open, RSS <= 300 MB", f"{slow['streams_receiving']} open, {slow['rss_mb']:.0f} MB", slow["streams_receiving"] == slow["streams"] and slow["rss_mb"] <= 300))
    results.append(("meanwhile a non-streamed request < 50 ms", f"max {slow['other_request_max_ms']:.1f} ms", slow["other_request_max_ms"] < 50))
    extra = report.orchestration_cpu_us["one_round"] - report.orchestration_cpu_us["passthrough"]
    results.append(("one orchestrated round <= 1 ms of CPU above passthrough", f"{extra / 1000:.2f} ms", extra <= 1000))
    for door in ("Responses", "Messages"):
        ratio = rows[f"plugway embedded: {door}"]["rps_32"] / embedded["rps_32"]
        results.append((f"{door} within 10 % of chat completions", f"{ratio:.2f}", ratio >= 0.9))
    workers = rows["plugway embedded, --workers 2"]["rps_32"] / embedded["rps_32"]
    results.append(("--workers 2 against 1 (reported, see README)", f"{workers:.2f}x", True))
    return results


def print_table(report: Report) -> None:
    rows = report.rows
    bare = rows["bare proxy (Starlette + aiohttp)"]["rps_32"]
    print()
    print(f"Measured {report.date} on {report.machine}; wrk -t1, {report.duration_s:.0f} s a run, every server up at once and measured in turn, median of the rounds.")
    print()
    print("| path (same run) | req/s at 32 connections | ratio to bare | p50 at 1 connection | p99 at 32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, row in rows.items():
        print(f"| {label} | {row['rps_32']:,.0f} | {row['rps_32'] / bare:.2f} | {row['p50_1_ms']:.2f} ms | {row['p99_32_ms']:.2f} ms |")
    print()
    print("| target | measured | met |")
    print("| --- | --- | :---: |")
    for target, measured, met in verdicts(report):
        print(f"| {target} | {measured} | {'yes' if met else 'NO'} |")
    errors = {label: row["errors"] for label, row in rows.items() if row["errors"]}
    if errors:
        print(f"\nErrors (non-2xx or socket) during the runs: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=6, help="seconds per 32-connection run (1-connection runs take half, at least 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every server; each figure is the median")
    parser.add_argument("--samples", type=int, default=300, help="streamed requests for time to first byte")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent slow streams")
    parser.add_argument("--cpu-requests", type=int, default=2000, help="requests per CPU measurement")
    parser.add_argument("--peer", choices=["litellm"], help="also measure a peer gateway in the same run")
    parser.add_argument("--json", type=Path, help="write the raw figures here too")
    parser.add_argument(
        "--baseline", type=Path, help="another plugway checkout (say, main's) whose full path is measured in the same rounds, on its own database"
    )
    args = parser.parse_args()
    report = run(args)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))


if __name__ == "__main__":
    main()
