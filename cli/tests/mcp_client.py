#!/usr/bin/env python3
"""Drives `latchfree serve` with the official Python MCP SDK (`pip install mcp`).

One stdio session (the SDK starts the server) and several Streamable HTTP
sessions run at once against the same server; then stdin EOF stops it, and
the script checks: one registry session per MCP session, the `/metrics`
call counter == tool calls made, and the audit directory verifies with one
line per call.

Usage: python3 tests/mcp_client.py target/debug/latchfree
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

HTTP_SESSIONS = 3
ROUNDS = 8
QUERIES = ["rust", "lock-free", "epoch", "seqlock", "mcp"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def text_of(result):
    is_error = getattr(result, "is_error", None)
    if is_error is None:
        is_error = getattr(result, "isError", False)
    assert not is_error, result
    return json.loads(result.content[0].text)


async def session_work(session, salt):
    """Concurrent calls in one session; returns (calls, session id, answers)."""
    calls, ids, answers = 0, set(), {}
    for rnd in range(ROUNDS):
        q = QUERIES[(rnd + salt) % len(QUERIES)]
        query, info = await asyncio.gather(
            session.call_tool("query", {"q": q}),
            session.call_tool("session_info", {}),
        )
        answers[q] = text_of(query)
        ids.add(text_of(info)["session"])
        calls += 2
    text_of(await session.call_tool("stats", {}))
    calls += 1
    assert len(ids) == 1, ids
    return calls, ids.pop(), answers


async def http_session(url, salt):
    async with streamable_http_client(url) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            return await session_work(session, salt)


async def main(binary):
    audit = tempfile.mkdtemp(prefix="latchfree-py-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    params = StdioServerParameters(
        command=binary,
        args=["serve", "--bind", f"127.0.0.1:{port}", "--audit-dir", audit,
              "--query-cost-ms", "1"],
    )
    with tempfile.TemporaryFile(mode="w+") as errlog:
        async with stdio_client(params, errlog=errlog) as streams:
            async with ClientSession(streams[0], streams[1]) as stdio:
                await stdio.initialize()
                tools = {t.name for t in (await stdio.list_tools()).tools}
                assert {"query", "session_info", "stats"} <= tools, tools
                for _ in range(100):  # wait for the HTTP listener
                    try:
                        urllib.request.urlopen(base + "/metrics", timeout=1).read()
                        break
                    except OSError:
                        await asyncio.sleep(0.05)
                results = await asyncio.gather(
                    session_work(stdio, 0),
                    *(http_session(base + "/mcp", i + 1) for i in range(HTTP_SESSIONS)),
                )
                metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    # stdio_client closed stdin: the server shut down gracefully.
    total = sum(r[0] for r in results)
    sessions = {r[1] for r in results}
    assert len(sessions) == HTTP_SESSIONS + 1, sessions
    merged = {}
    for _, _, answers in results:
        for q, a in answers.items():
            assert merged.setdefault(q, a) == a, f"query {q!r} answered differently"

    def counter(name):
        for line in metrics.splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
        raise AssertionError(f"{name} missing from /metrics")

    assert counter("engine_calls_total") == total, (counter("engine_calls_total"), total)
    assert counter("engine_sessions_created_total") == len(sessions)
    assert counter("engine_errors_total") == 0

    verify = subprocess.run([binary, "audit", "verify", audit], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    lines = 0
    seen = set()
    for name in os.listdir(audit):
        if name.endswith(".jsonl"):
            with open(os.path.join(audit, name)) as f:
                for line in f:
                    seen.add(json.loads(line)["event"]["session"])
                    lines += 1
    assert lines == total, (lines, total)
    assert seen == sessions, (seen, sessions)
    print(f"mcp_client.py: ok: {len(sessions)} sessions (1 stdio + {HTTP_SESSIONS} HTTP), "
          f"{total} tool calls == /metrics == audit lines; {verify.stdout.strip()}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
